// COMMIT, the commit marker: written last; parsed over simdjson On Demand with the index's
// strictness (its text is at most 1 MiB).
#include "format/index.hpp"
#include "format/json_support.hpp"

#include <simdjson.h>

namespace ckpt::format {

namespace {

namespace od = simdjson::ondemand;
using json::append_u64;
using json::non_negative_integer;
using json::shown;

#define CKPT_JSON(expr, where, expected)                                           \
  do {                                                                             \
    if (auto ckpt_json_e = (expr)) return sink.json(ckpt_json_e, where, expected); \
  } while (0)

/// `decl` = the value read as a non-negative integer / string; `where` is only built on error.
#define CKPT_GET_U64(decl, v, where)                                                         \
  std::uint64_t CKPT_CAT(ckpt_u_, __LINE__);                                                 \
  CKPT_JSON((v).get_uint64().get(CKPT_CAT(ckpt_u_, __LINE__)), where, non_negative_integer); \
  decl = CKPT_CAT(ckpt_u_, __LINE__)
#define CKPT_GET_STR(decl, v, where)                                               \
  std::string_view CKPT_CAT(ckpt_s_, __LINE__);                                    \
  CKPT_JSON((v).get_string().get(CKPT_CAT(ckpt_s_, __LINE__)), where, "a string"); \
  decl = CKPT_CAT(ckpt_s_, __LINE__)
#define CKPT_CAT2(a, b) a##b
#define CKPT_CAT(a, b) CKPT_CAT2(a, b)

/// A major version other than ours is errc::unsupported_version.
result<json::version_t> check_major(const json::error_sink& sink, json::version_t ver) {
  if (ver.major != version_major) {
    return sink.make(errc::unsupported_version,
                     "format version " + std::to_string(ver.major) + "." +
                         std::to_string(ver.minor) +
                         (ver.major > version_major ? " is newer than this reader ("
                                                    : " is older than this reader (") +
                         std::to_string(version_major) + ".x)");
  }
  return ver;
}

/// Reads "version" first (wherever it is in the root object), so that a newer major version is
/// reported as such rather than as whatever schema difference comes first; then rewinds.
result<json::version_t> check_version(const json::error_sink& sink, od::document& doc) {
  od::object root;
  CKPT_JSON(doc.get_object().get(root), "root", "an object");
  od::value v;
  auto e = root.find_field_unordered("version").get(v);
  if (e == simdjson::NO_SUCH_FIELD) return sink.corrupt("missing key \"version\"");
  CKPT_JSON(e, "version", {});
  od::array a;
  CKPT_JSON(v.get_array().get(a), "version", "an array [major, minor]");
  json::version_t ver;
  std::size_t n = 0;
  for (auto el : a) {
    od::value x;
    CKPT_JSON(el.get(x), "version", {});
    std::uint64_t u;
    CKPT_JSON(x.get_uint64().get(u), "version", "an array of two non-negative integers");
    if (n == 0) ver.major = u;
    if (n == 1) ver.minor = u;
    ++n;
  }
  if (n != 2) return sink.corrupt("version: expected an array [major, minor]");
  CKPT_TRY(check_major(sink, ver));
  doc.rewind();
  return ver;
}

/// True when the document has been read to its end (nothing but whitespace left).
bool at_end(od::document& doc) {
  return doc.current_location().error() == simdjson::OUT_OF_BOUNDS;
}

/// simdjson's On-Demand parser, reused per thread for small documents (its buffers grow to the
/// largest document seen); large documents get a parser of their own so the memory goes back.
template <class F>
auto with_parser(std::string_view json, F&& f) -> decltype(f(std::declval<od::document&>())) {
  constexpr std::size_t reuse_below = 64u << 20;
  thread_local od::parser cached;
  od::parser local;
  od::parser& p = json.size() < reuse_below ? cached : local;
  od::document doc;
  auto e =
      p.iterate(simdjson::padded_string_view(json.data(), json.size(), json.size() + parse_padding))
          .get(doc);
  if (e) return error(errc::corrupt, simdjson::error_message(e));
  return f(doc);
}

void append_file_ref(std::string& out, std::string_view key, std::uint64_t bytes, std::uint64_t h) {
  out += ",\"";
  out += key;
  out += "\":{\"bytes\":";
  append_u64(out, bytes);
  out += ",\"xxh3\":\"";
  out += checksum_hex(h);
  out += "\"}";
}

result<void> parse_file_ref(const json::error_sink& sink, od::value& v, std::string_view key,
                            std::uint64_t& bytes, std::uint64_t& h, std::string& unknown) {
  od::object o;
  CKPT_JSON(v.get_object().get(o), key, "an object {\"bytes\":N,\"xxh3\":\"hex\"}");
  bool has_bytes = false, has_h = false;
  for (auto fr : o) {
    od::field f;
    CKPT_JSON(std::move(fr).get(f), key, {});
    std::string_view k;
    CKPT_JSON(f.unescaped_key().get(k), key, {});
    od::value& fv = f.value();
    const std::string where = std::string(key) + "." + std::string(k);
    if (k == "bytes") {
      if (has_bytes) return sink.corrupt("duplicate key " + shown(where));
      has_bytes = true;
      CKPT_GET_U64(bytes, fv, where);
    } else if (k == "xxh3") {
      if (has_h) return sink.corrupt("duplicate key " + shown(where));
      has_h = true;
      CKPT_GET_STR(std::string_view s, fv, where);
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

result<commit_marker> parse_commit(std::string_view json) {
  constexpr std::size_t max_commit_bytes = 1 << 20;
  if (json.size() > max_commit_bytes) {
    return fail(errc::limit_exceeded, "COMMIT: " + std::to_string(json.size()) +
                                          " bytes, more than the cap of " +
                                          std::to_string(max_commit_bytes));
  }
  if (json.empty()) return fail(errc::corrupt, "COMMIT: empty");
  auto r = with_parser(json, [&](od::document& doc) -> result<commit_marker> {
    const json::error_sink sink{"COMMIT"};
    CKPT_TRY(json::version_t ver, check_version(sink, doc));
    od::object root;
    CKPT_JSON(doc.get_object().get(root), "root", "an object");
    commit_marker m;
    constexpr unsigned k_format = 1, k_version = 2, k_index = 4, k_metadata = 8, k_job = 16,
                       k_logical = 32, k_stored = 64, k_created = 128;
    unsigned seen = 0;
    std::string unknown;
    for (auto fr : root) {
      od::field f;
      CKPT_JSON(std::move(fr).get(f), "root", {});
      std::string_view key;
      CKPT_JSON(f.unescaped_key().get(key), "root key", {});
      od::value& v = f.value();
      unsigned bit = key == "format"            ? k_format
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
          CKPT_GET_STR(std::string_view s, v, "format");
          if (s != "ckpt-commit") {
            return sink.corrupt("format is " + shown(s) + ", expected \"ckpt-commit\"");
          }
          break;
        }
        case k_version:
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
        case k_logical: {
          CKPT_GET_U64(m.logical_bytes, v, key);
          break;
        }
        case k_stored: {
          CKPT_GET_U64(m.stored_bytes, v, key);
          break;
        }
        case k_created: {
          CKPT_GET_U64(m.created_unix_ns, v, key);
          break;
        }
      }
    }
    if (!at_end(doc)) return sink.corrupt("trailing content after the root object");
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
  });
  if (!r && r.error() == errc::corrupt && r.error().message().rfind("COMMIT", 0) != 0) {
    return fail(std::move(r).error().with_context("COMMIT: malformed JSON"));
  }
  return r;
}

#undef CKPT_GET_STR
#undef CKPT_GET_U64
#undef CKPT_JSON

}  // namespace ckpt::format
