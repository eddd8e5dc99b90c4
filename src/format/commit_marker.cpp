// COMMIT, the commit marker: written last, parsed (simdjson DOM) with the index's strictness.
#include "format/index.hpp"
#include "format/json_support.hpp"

namespace ckpt::format {

namespace {

using json::append_u64;
namespace dom = simdjson::dom;
using json::shown;

void append_file_ref(std::string& out, std::string_view key, std::uint64_t bytes, std::uint64_t h) {
  out += ",\"";
  out += key;
  out += "\":{\"bytes\":";
  append_u64(out, bytes);
  out += ",\"xxh3\":\"";
  out += checksum_hex(h);
  out += "\"}";
}

#define CKPT_COMMIT_JSON(expr, where, expected)                          \
  do {                                                                   \
    if (auto ckpt_e = (expr)) return sink.json(ckpt_e, where, expected); \
  } while (0)

result<void> parse_file_ref(const json::error_sink& sink, dom::element v, std::string_view key,
                            std::uint64_t& bytes, std::uint64_t& h, std::string& unknown) {
  dom::object o;
  CKPT_COMMIT_JSON(v.get_object().get(o), key, "an object {\"bytes\":N,\"xxh3\":\"hex\"}");
  bool has_bytes = false, has_h = false;
  for (dom::key_value_pair f : o) {
    const std::string where = std::string(key) + "." + std::string(f.key);
    if (f.key == "bytes") {
      if (has_bytes) return sink.corrupt("duplicate key " + shown(where));
      has_bytes = true;
      CKPT_COMMIT_JSON(f.value.get_uint64().get(bytes), where, json::non_negative_integer);
    } else if (f.key == "xxh3") {
      if (has_h) return sink.corrupt("duplicate key " + shown(where));
      has_h = true;
      std::string_view s;
      CKPT_COMMIT_JSON(f.value.get_string().get(s), where, "a string");
      auto r = parse_checksum_hex(s);
      if (!r) return sink.corrupt(where + ": " + r.error().message());
      h = r.value();
    } else if (unknown.empty()) {
      unknown = where;
    }
  }
  if (!has_bytes) return sink.corrupt("missing key \"" + std::string(key) + ".bytes\"");
  if (!has_h) return sink.corrupt("missing key \"" + std::string(key) + ".xxh3\"");
  return success();
}

result<commit_marker> parse_root(const json::error_sink& sink, dom::element doc) {
  dom::object root;
  CKPT_COMMIT_JSON(doc.get_object().get(root), "root", "an object");
  CKPT_TRY(json::version_t ver, json::check_version(sink, root));
  commit_marker m;
  constexpr unsigned k_format = 1, k_version = 2, k_index = 4, k_metadata = 8, k_job = 16,
                     k_logical = 32, k_stored = 64, k_created = 128;
  unsigned seen = 0;
  std::string unknown;
  for (dom::key_value_pair f : root) {
    const std::string_view key = f.key;
    const dom::element v = f.value;
    const unsigned bit = key == "format"            ? k_format
                         : key == "version"         ? k_version
                         : key == "index"           ? k_index
                         : key == "metadata"        ? k_metadata
                         : key == "job"             ? k_job
                         : key == "logical_bytes"   ? k_logical
                         : key == "stored_bytes"    ? k_stored
                         : key == "created_unix_ns" ? k_created
                                                    : 0;
    if (bit == 0) {
      if (unknown.empty()) unknown = std::string(key.substr(0, 64));
      continue;
    }
    if (seen & bit) return sink.corrupt("duplicate key " + shown(key));
    seen |= bit;
    switch (bit) {
      case k_format: {
        std::string_view s;
        CKPT_COMMIT_JSON(v.get_string().get(s), "format", "a string");
        if (s != "ckpt-commit") {
          return sink.corrupt("format is " + shown(s) + ", expected \"ckpt-commit\"");
        }
        break;
      }
      case k_version:  // checked by check_version
        break;
      case k_index: {
        CKPT_TRY(parse_file_ref(sink, v, key, m.index_bytes, m.index_xxh3, unknown));
        break;
      }
      case k_metadata: {
        CKPT_TRY(parse_file_ref(sink, v, key, m.metadata_bytes, m.metadata_xxh3, unknown));
        break;
      }
      case k_job: {
        m.has_job = true;
        CKPT_TRY(parse_file_ref(sink, v, key, m.job_bytes, m.job_xxh3, unknown));
        break;
      }
      case k_logical:
        CKPT_COMMIT_JSON(v.get_uint64().get(m.logical_bytes), key, json::non_negative_integer);
        break;
      case k_stored:
        CKPT_COMMIT_JSON(v.get_uint64().get(m.stored_bytes), key, json::non_negative_integer);
        break;
      case k_created:
        CKPT_COMMIT_JSON(v.get_uint64().get(m.created_unix_ns), key, json::non_negative_integer);
        break;
    }
  }
  for (auto [bit, name] : {std::pair{k_format, "format"},
                           {k_version, "version"},
                           {k_index, "index"},
                           {k_metadata, "metadata"},
                           {k_logical, "logical_bytes"},
                           {k_stored, "stored_bytes"},
                           {k_created, "created_unix_ns"}}) {
    if (!(seen & bit)) return sink.corrupt(std::string("missing key \"") + name + "\"");
  }
  if (!unknown.empty() && ver.minor <= version_minor) {
    return sink.corrupt("unknown key " + shown(unknown) + " in a version " +
                        std::to_string(ver.major) + "." + std::to_string(ver.minor) +
                        " commit marker");
  }
  return m;
}

#undef CKPT_COMMIT_JSON

}  // namespace

std::string encode_commit(const commit_marker& m) {
  std::string out;
  out.reserve(320);
  out += "{\"format\":\"ckpt-commit\",";
  json::append_version(out);
  append_file_ref(out, "index", m.index_bytes, m.index_xxh3);
  append_file_ref(out, "metadata", m.metadata_bytes, m.metadata_xxh3);
  if (m.has_job) append_file_ref(out, "job", m.job_bytes, m.job_xxh3);
  out += ",\"logical_bytes\":";
  append_u64(out, m.logical_bytes);
  out += ",\"stored_bytes\":";
  append_u64(out, m.stored_bytes);
  out += ",\"created_unix_ns\":";
  append_u64(out, m.created_unix_ns);
  out += "}\n";
  return out;
}

result<commit_marker> parse_commit(std::string_view text) {
  constexpr std::size_t max_commit_bytes = 1 << 20;
  if (text.size() > max_commit_bytes) {
    return fail(errc::limit_exceeded, "COMMIT: " + std::to_string(text.size()) +
                                          " bytes, more than the cap of " +
                                          std::to_string(max_commit_bytes));
  }
  if (text.empty()) return fail(errc::corrupt, "COMMIT: empty");
  const json::error_sink sink{"COMMIT"};
  return json::with_dom(sink, text, [&](dom::element root) { return parse_root(sink, root); });
}

}  // namespace ckpt::format
