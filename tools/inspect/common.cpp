// ckpt-inspect: shared argument parsing, formatting and checkpoint opening.
#include "common.hpp"

#include <boost/json/serialize.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace ckpt::inspect {

args parse_args(int argc, char** argv, int first, std::vector<std::string_view> allowed) {
  args a;
  auto allows = [&](std::string_view o) {
    return std::find(allowed.begin(), allowed.end(), o) != allowed.end();
  };
  for (int i = first; i < argc; ++i) {
    std::string_view s = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw usage_error(std::string(s) + " needs a value");
      return argv[++i];
    };
    if (s == "--") {
      for (++i; i < argc; ++i)
        a.positional.emplace_back(argv[i]);
      break;
    }
    if (s.size() > 1 && s[0] == '-' && !allows(s)) {
      throw usage_error("unknown option " + std::string(s));
    }
    if (s == "--json") {
      a.json = true;
    } else if (s == "--leaf") {
      a.leaf = value();
    } else if (s == "-o") {
      a.output = value();
    } else if (s == "--to") {
      a.to = value();
    } else {
      a.positional.emplace_back(s);
    }
  }
  return a;
}

void expect_positional(const args& a, std::size_t n, std::string_view usage) {
  if (a.positional.size() != n) {
    throw usage_error((a.positional.size() < n ? "missing arguments" : "too many arguments") +
                      std::string("; usage: ckpt-inspect ") + std::string(usage));
  }
}

bool colour_stdout() {
  static const bool on = ::isatty(1) == 1 && std::getenv("NO_COLOR") == nullptr;
  return on;
}

namespace {
std::string ansi(std::string_view code, std::string_view s) {
  if (!colour_stdout()) return std::string(s);
  return "\x1b[" + std::string(code) + "m" + std::string(s) + "\x1b[0m";
}
// Display width of a cell: bytes outside ANSI escapes (our cells are ASCII or UTF-8 keys;
// UTF-8 continuation bytes do not count).
std::size_t width(std::string_view s) {
  std::size_t w = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\x1b') {
      while (i < s.size() && s[i] != 'm')
        ++i;
      continue;
    }
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) ++w;
  }
  return w;
}
}  // namespace

std::string green(std::string_view s) {
  return ansi("32", s);
}
std::string red(std::string_view s) {
  return ansi("31", s);
}
std::string yellow(std::string_view s) {
  return ansi("33", s);
}
std::string bold(std::string_view s) {
  return ansi("1", s);
}
std::string dim(std::string_view s) {
  return ansi("2", s);
}

std::string human_bytes(std::uint64_t n) {
  char buf[64];
  const double d = static_cast<double>(n);
  if (n < 1024) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", n);
  } else if (n < (1ull << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", d / 1024);
  } else if (n < (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", d / (1 << 20));
  } else if (n < (1ull << 40)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", d / (1ull << 30));
  } else {
    std::snprintf(buf, sizeof buf, "%.2f TiB", d / (1ull << 40));
  }
  return buf;
}

std::string human_time(std::uint64_t unix_ns) {
  std::time_t t = static_cast<std::time_t>(unix_ns / 1'000'000'000ull);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string shape_string(const ckpt::shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

std::string ratio_string(std::uint64_t logical, std::uint64_t stored) {
  if (stored == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f",
                static_cast<double>(logical) / static_cast<double>(stored));
  return buf;
}

table::table(std::vector<std::string> header, std::vector<bool> right) : right_(std::move(right)) {
  right_.resize(header.size(), false);
  rows_.push_back(std::move(header));
}

std::size_t table::add(std::vector<std::string> row) {
  row.resize(rows_.front().size());
  rows_.push_back(std::move(row));
  return rows_.size() - 1;
}

void table::set(std::size_t row, std::size_t column, std::string value) {
  rows_.at(row).at(column) = std::move(value);
}

void table::print(std::FILE* out, std::string_view indent) const {
  std::vector<std::size_t> w(rows_.front().size(), 0);
  for (const auto& r : rows_)
    for (std::size_t c = 0; c < r.size(); ++c)
      w[c] = std::max(w[c], width(r[c]));
  for (std::size_t ri = 0; ri < rows_.size(); ++ri) {
    std::string line(indent);
    const auto& r = rows_[ri];
    // The last non-empty column ends the line (no trailing blanks).
    std::size_t last = r.size();
    while (last > 0 && r[last - 1].empty())
      --last;
    for (std::size_t c = 0; c < last; ++c) {
      std::string cell = ri == 0 ? bold(r[c]) : r[c];
      std::string pad(w[c] - width(r[c]), ' ');
      if (c) line += "  ";
      if (right_[c]) {
        line += pad + cell;
      } else {
        line += cell;
        if (c + 1 < last) line += pad;
      }
    }
    std::fprintf(out, "%s\n", line.c_str());
  }
}

boost::json::array shape_json(const ckpt::shape& s) {
  boost::json::array a;
  for (auto e : s)
    a.emplace_back(static_cast<std::uint64_t>(e));
  return a;
}

void print_json(const boost::json::value& v) {
  std::string s = boost::json::serialize(v);
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
}

std::string pretty_json(const boost::json::value& v, int indent) {
  const std::string pad(static_cast<std::size_t>(indent + 2), ' ');
  const std::string end_pad(static_cast<std::size_t>(indent), ' ');
  if (v.is_object()) {
    const auto& o = v.as_object();
    if (o.empty()) return "{}";
    std::string out = "{\n";
    std::size_t i = 0;
    for (const auto& kv : o) {
      out += pad + boost::json::serialize(boost::json::value(kv.key())) + ": " +
             pretty_json(kv.value(), indent + 2);
      out += ++i < o.size() ? ",\n" : "\n";
    }
    return out + end_pad + "}";
  }
  if (v.is_array()) {
    const auto& a = v.as_array();
    if (a.empty()) return "[]";
    // Short arrays of scalars on one line.
    bool scalars = std::all_of(a.begin(), a.end(),
                               [](const auto& e) { return !e.is_object() && !e.is_array(); });
    if (scalars && a.size() <= 8) return boost::json::serialize(v);
    std::string out = "[\n";
    for (std::size_t i = 0; i < a.size(); ++i) {
      out += pad + pretty_json(a[i], indent + 2);
      out += i + 1 < a.size() ? ",\n" : "\n";
    }
    return out + end_pad + "]";
  }
  return boost::json::serialize(v);
}

opened open_checkpoint(const std::filesystem::path& path, int error_code) {
  auto cf = checkpoint::read_files_blocking(path);
  if (!cf) throw tool_error(cf.error().message(), error_code);
  if (!cf.value().committed()) {
    throw tool_error(cf.value().first_problem().message(), error_code);
  }
  if (cf.value().sharded()) {
    throw tool_error(path.string() + " is a sharded checkpoint (" +
                         std::to_string(cf.value().sharded_commit->ranks) +
                         " ranks): show and verify read it whole; this command reads one rank's "
                         "part, e.g. " +
                         (path / format::rank_dir_name(0)).string(),
                     error_code);
  }
  auto& v = cf.value();
  tree structure = format::structure(*v.index);
  return opened{path,
                *v.commit,
                std::move(*v.index),
                std::move(*v.metadata),
                std::move(v.job),
                std::move(structure)};
}

leaf_stats stats_of(const format::leaf_entry& le) {
  leaf_stats s;
  for (const auto& c : le.chunks) {
    s.stored += c.stored_size;
    ++s.codec_chunks[static_cast<int>(c.codec)];
    s.fill += format::run_bytes(c.runs);
    s.raw += c.raw_size;
  }
  return s;
}

std::string codec_mix(const leaf_stats& s) {
  int kinds = 0;
  for (auto n : s.codec_chunks)
    kinds += n > 0;
  if (kinds == 0) return "-";
  std::string out;
  for (int c = 0; c < 3; ++c) {
    if (!s.codec_chunks[c]) continue;
    if (!out.empty()) out += ' ';
    out += format::codec_name(static_cast<format::codec>(c));
    if (kinds > 1) out += ":" + std::to_string(s.codec_chunks[c]);
  }
  if (s.fill > 0 && s.raw > 0) out += " fill:" + std::to_string(s.fill * 100 / s.raw) + "%";
  return out;
}

boost::json::object codec_mix_json(const leaf_stats& s) {
  boost::json::object o;
  for (int c = 0; c < 3; ++c)
    o[format::codec_name(static_cast<format::codec>(c))] = s.codec_chunks[c];
  return o;
}

sharing sharing_of(const std::filesystem::path& dir, const format::index& ix) {
  sharing s;
  for (const auto& f : ix.files) {
    file_group* g = &s.own;
    if (!f.origin.empty()) {
      auto it = std::find_if(s.shared.begin(), s.shared.end(),
                             [&](const file_group& x) { return x.origin == f.origin; });
      if (it == s.shared.end()) {
        s.shared.push_back(file_group{f.origin});
        it = s.shared.end() - 1;
      }
      g = &*it;
    }
    ++g->files;
    g->bytes += f.size;
    struct stat st {};
    if (::stat((dir / f.name).c_str(), &st) != 0) {
      ++g->missing;
    } else if (st.st_nlink > 1) {
      ++g->linked;
    }
  }
  return s;
}

std::string describe_group(const file_group& g) {
  std::string out = human_bytes(g.bytes) + (g.origin.empty() ? " itself" : " with " + g.origin);
  out += " (" + std::to_string(g.files) + " data file" + (g.files == 1 ? "" : "s");
  if (g.origin.empty()) {
    if (g.linked) out += ", " + std::to_string(g.linked) + " also linked elsewhere";
  } else if (g.linked == g.files) {
    out += ", still shared";
  } else if (g.linked == 0 && g.missing == 0) {
    out += ", only here now";
  } else if (g.linked) {
    out += ", " + std::to_string(g.linked) + " still shared";
  }
  if (g.missing) out += ", " + std::to_string(g.missing) + " missing";
  return out + ")";
}

}  // namespace ckpt::inspect
