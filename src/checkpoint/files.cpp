// The one reader of a checkpoint's small files (files.hpp): opened, sized, read and checksummed
// through the io engine; problems go to one sink that either stops at the first or collects.
#include "checkpoint/files.hpp"

#include "io/async.hpp"
#include "pipeline/runtime_impl.hpp"

#include <boost/json/parse.hpp>

#include <fcntl.h>

#include <variant>

namespace ckpt::checkpoint {

namespace asio = boost::asio;

namespace {

// Where problems go: every one is kept as a verify_problem; the first one also as the error a
// load reports. In stop mode reading ends there.
struct sink {
  checkpoint_files& cf;
  bool stop;

  void add(std::string file, std::error_code code, std::string message) {
    if (!cf.first_error) {
      if (code == make_error_code(errc::not_committed)) {
        cf.first_error = error(
            code, cf.where + " is not a committed checkpoint (" + file + ": " + message + ")");
      } else {
        cf.first_error = error(code, cf.where + "/" + file + ": " + message);
      }
    }
    cf.problems.push_back({std::move(file), {}, -1, -1, std::move(message)});
  }
  // A format parser's error: its message without the leading "<file>: " (the problem names the
  // file), its code kept.
  void add(const std::string& file, const error& e, errc code_for_corrupt = errc::corrupt) {
    std::string m = e.message();
    if (m.rfind(file + ": ", 0) == 0) m.erase(0, file.size() + 2);
    add(file, e == errc::corrupt ? make_error_code(code_for_corrupt) : e.code(), std::move(m));
  }
  bool done() const { return stop && !cf.problems.empty(); }
};

// What went wrong with a small file, as a code and a message (the sink adds the file name).
struct read_problem {
  std::error_code code;
  std::string message;
};

// Reads `name` below dir_fd: size checked against `cap` and, when given, `expect`.
asio::awaitable<std::variant<std::string, read_problem>> read_one(
    io::engine& io, int dir_fd, const std::string& name, std::optional<std::uint64_t> expect,
    std::uint64_t cap) {
  using out_t = std::variant<std::string, read_problem>;
  auto f = co_await io.open(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (!f) {
    if (f.error() == std::errc::no_such_file_or_directory) {
      co_return out_t(read_problem{make_error_code(errc::not_found), "missing"});
    }
    co_return out_t(read_problem{f.error().code(), "cannot open: " + f.error().what()});
  }
  out_t out = read_problem{make_error_code(errc::corrupt), ""};
  auto st = co_await io.statx(f.value().fd, "", AT_EMPTY_PATH);
  if (!st) {
    out = read_problem{st.error().code(), "cannot stat: " + st.error().what()};
  } else if (const std::uint64_t size = st.value().stx_size; size > cap) {
    out = read_problem{
        make_error_code(errc::limit_exceeded),
        "is " + std::to_string(size) + " bytes, more than the cap of " + std::to_string(cap)};
  } else if (expect && size != *expect) {
    out = read_problem{make_error_code(errc::corrupt),
                       "is " + std::to_string(size) + " bytes, the commit marker says " +
                           std::to_string(*expect) + (size < *expect ? " (truncated)" : "")};
  } else {
    std::string text;
    bool grown = true;
    try {
      text.reserve(size + format::parse_padding);
      text.resize(size);
    } catch (const std::bad_alloc&) {
      grown = false;
      out = read_problem{make_error_code(errc::limit_exceeded),
                         "cannot allocate " + std::to_string(size) + " bytes"};
    }
    if (grown) {
      auto n = co_await io.read(f.value(), std::as_writable_bytes(std::span(text)), 0);
      if (!n) {
        out = read_problem{n.error().code(), "read error: " + n.error().what()};
      } else if (n.value() != size) {
        out = read_problem{make_error_code(errc::corrupt), "shrank while being read"};
      } else {
        out = std::move(text);
      }
    }
  }
  (void)co_await io.close(f.value());
  co_return out;
}

// A small file recorded in COMMIT: read, size and checksum checked. None on a problem.
asio::awaitable<std::optional<std::string>> read_recorded(io::engine& io, sink& s,
                                                          std::string_view file,
                                                          std::uint64_t bytes, std::uint64_t xxh3,
                                                          std::uint64_t cap) {
  const std::string name(file);
  auto r = co_await read_one(io, s.cf.dir.fd, name, bytes, cap);
  if (auto* p = std::get_if<read_problem>(&r)) {
    const bool missing = p->code == make_error_code(errc::not_found);
    s.add(name, missing ? make_error_code(errc::corrupt) : p->code, std::move(p->message));
    co_return std::nullopt;
  }
  auto& text = std::get<std::string>(r);
  const std::uint64_t got = format::checksum(std::as_bytes(std::span(text)));
  if (got != xxh3) {
    s.add(name, make_error_code(errc::corrupt),
          "checksum mismatch (commit marker says " + format::checksum_hex(xxh3) + ", file has " +
              format::checksum_hex(got) + ")");
    co_return std::nullopt;
  }
  co_return std::move(text);
}

std::optional<boost::json::object> parse_object(sink& s, std::string_view file,
                                                const std::string& text) {
  boost::json::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec) {
    s.add(std::string(file), make_error_code(errc::corrupt),
          "not valid JSON (" + ec.message() + ")");
    return std::nullopt;
  }
  if (!v.is_object()) {
    s.add(std::string(file), make_error_code(errc::corrupt), "not a JSON object");
    return std::nullopt;
  }
  return std::move(v.as_object());
}

// metadata.json and (when recorded) job.json, as COMMIT records them.
asio::awaitable<void> read_metadata_and_job(io::engine& io, sink& s, std::uint64_t meta_bytes,
                                            std::uint64_t meta_xxh3, bool has_job,
                                            std::uint64_t job_bytes, std::uint64_t job_xxh3) {
  auto meta = co_await read_recorded(io, s, format::metadata_file, meta_bytes, meta_xxh3,
                                     small_file_cap(format::metadata_file));
  if (meta) s.cf.metadata = parse_object(s, format::metadata_file, *meta);
  if (!has_job || s.done()) co_return;
  auto job = co_await read_recorded(io, s, format::job_file, job_bytes, job_xxh3,
                                    small_file_cap(format::job_file));
  if (job) s.cf.job = parse_object(s, format::job_file, *job);
}

void check_total(sink& s, std::string_view field, std::uint64_t recorded, std::string_view what,
                 std::uint64_t counted) {
  if (recorded == counted) return;
  s.add(std::string(format::commit_file), make_error_code(errc::corrupt),
        std::string(field) + " is " + std::to_string(recorded) + ", " + std::string(what) + " " +
            std::to_string(counted));
}

asio::awaitable<void> read_sharded(io::engine& io, sink& s, const std::string& commit_text) {
  auto& cf = s.cf;
  const std::string commit_name(format::commit_file);
  auto cm = format::parse_sharded_commit(commit_text);
  if (!cm) {
    s.add(commit_name, cm.error(), errc::not_committed);
    co_return;
  }
  cf.sharded_commit = cm.value();
  const auto& c = *cf.sharded_commit;
  co_await read_metadata_and_job(io, s, c.metadata_bytes, c.metadata_xxh3, c.has_job, c.job_bytes,
                                 c.job_xxh3);
  if (s.done()) co_return;
  const std::string name(format::sharded_index_file);
  format::sharded_limits limits;
  auto text =
      co_await read_recorded(io, s, name, c.index_bytes, c.index_xxh3, small_file_cap(name));
  if (!text) co_return;
  auto ix = format::parse_sharded_index(*text, limits);
  if (!ix) {
    s.add(name, ix.error());
    co_return;
  }
  cf.sharded_index = std::move(ix.value());
  std::uint64_t logical = 0;
  for (const auto& le : cf.sharded_index->leaves)
    logical += le.num_bytes;
  check_total(s, "logical_bytes", c.logical_bytes, "the sharded index's leaves hold", logical);
  check_total(s, "ranks", c.ranks, "the sharded index lists", cf.sharded_index->ranks.size());
}

asio::awaitable<void> read_ordinary(io::engine& io, sink& s, const std::string& commit_text,
                                    const read_options& opt) {
  auto& cf = s.cf;
  const std::string commit_name(format::commit_file);
  auto cm = format::parse_commit(commit_text);
  if (!cm) {
    s.add(commit_name, cm.error(), errc::not_committed);
    co_return;
  }
  cf.commit = cm.value();
  const auto& c = *cf.commit;
  co_await read_metadata_and_job(io, s, c.metadata_bytes, c.metadata_xxh3, c.has_job, c.job_bytes,
                                 c.job_xxh3);
  if (!opt.index || s.done()) co_return;
  const std::string name(format::index_file);
  format::parse_limits limits;
  auto text =
      co_await read_recorded(io, s, name, c.index_bytes, c.index_xxh3, small_file_cap(name));
  if (!text) co_return;
  auto ix = format::parse_index(*text, limits);
  if (!ix) {
    s.add(name, ix.error());
    co_return;
  }
  cf.index = std::move(ix.value());
  std::uint64_t logical = 0, stored = 0;
  for (const auto& le : cf.index->leaves)
    logical += le.num_bytes;
  for (const auto& fe : cf.index->files)
    stored += fe.size;
  check_total(s, "logical_bytes", c.logical_bytes, "the index's leaves hold", logical);
  check_total(s, "stored_bytes", c.stored_bytes, "the index's data files hold", stored);
}

}  // namespace

std::uint64_t small_file_cap(std::string_view name) noexcept {
  if (name == format::commit_file) return max_commit_file;
  if (name == format::index_file) return format::parse_limits{}.max_index_bytes;
  if (name == format::sharded_index_file) return format::sharded_limits{}.max_index_bytes;
  return max_small_file;
}

error checkpoint_files::first_problem() const {
  if (first_error) return *first_error;
  return error(errc::corrupt, where + ": not a checkpoint");
}

asio::awaitable<result<checkpoint_files>> read_files(io::engine& io, std::filesystem::path dir,
                                                     read_options opt) {
  checkpoint_files cf;
  cf.where = dir.string();
  cf.index_read = opt.index;
  auto d = co_await io.open(AT_FDCWD, cf.where, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!d) {
    if (d.error() == std::errc::no_such_file_or_directory) {
      co_return fail(errc::not_found, "no checkpoint at " + cf.where);
    }
    co_return fail(std::move(d).error().with_context("open checkpoint " + cf.where));
  }
  cf.dir = d.value();
  sink s{cf, opt.stop_at_first};
  const std::string commit_name(format::commit_file);
  auto commit =
      co_await read_one(io, cf.dir.fd, commit_name, std::nullopt, small_file_cap(commit_name));
  if (auto* p = std::get_if<read_problem>(&commit)) {
    cf.has_commit_file = p->code != make_error_code(errc::not_found);
    // (An unreadable COMMIT is a system error; a missing, oversized or short one: not committed.)
    const bool ours = &p->code.category() == &error_category();
    s.add(commit_name, ours ? make_error_code(errc::not_committed) : p->code,
          std::move(p->message));
  } else {
    const std::string& text = std::get<std::string>(commit);
    cf.has_commit_file = true;
    cf.commit_bytes = text.size();
    cf.commit_xxh3 = format::checksum(std::as_bytes(std::span(text)));
    if (format::is_sharded_commit_text(text)) {
      co_await read_sharded(io, s, text);
    } else {
      co_await read_ordinary(io, s, text, opt);
    }
  }
  if (!opt.keep_dir) {
    (void)co_await io.close(cf.dir);
    cf.dir.fd = -1;
  }
  co_return cf;
}

result<checkpoint_files> read_files_blocking(const std::filesystem::path& dir, read_options options,
                                             std::shared_ptr<runtime> rt) {
  options.keep_dir = false;
  rt = runtime_or_global(rt);
  return detail::run_blocking(rt->executor(), read_files(rt->io(), dir, options));
}

asio::awaitable<result<std::string>> read_small_file(io::engine& io, int dir_fd, std::string name,
                                                     std::uint64_t cap) {
  auto r = co_await read_one(io, dir_fd, name, std::nullopt, cap);
  if (auto* p = std::get_if<read_problem>(&r))
    co_return fail(error(p->code, name + ": " + p->message));
  co_return std::move(std::get<std::string>(r));
}

result<std::string> read_small_file_blocking(const std::filesystem::path& file, std::uint64_t cap,
                                             std::shared_ptr<runtime> rt) {
  rt = runtime_or_global(rt);
  return detail::run_blocking(rt->executor(),
                              read_small_file(rt->io(), AT_FDCWD, file.string(), cap));
}

}  // namespace ckpt::checkpoint
