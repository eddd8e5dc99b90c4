#include "format/json_support.hpp"

namespace ckpt::format::json {

void append_version(std::string& out) {
  out += "\"version\":[";
  append_u64(out, version_major);
  out += ',';
  append_u64(out, version_minor);
  out += ']';
}

std::string shown(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 64)) {
    out += static_cast<unsigned char>(c) < 0x20 ? '?' : c;
  }
  if (s.size() > 64) out += "...";
  return out + "\"";
}

error error_sink::make(errc e, std::string_view msg) const {
  std::string m(file_);
  m += ": ";
  m += msg;
  return error(e, std::move(m));
}

error error_sink::json(simdjson::error_code e, std::string_view where,
                       std::string_view expected) const {
  if (e == simdjson::DEPTH_ERROR) return limit(std::string(where) + ": JSON nesting too deep");
  if (!expected.empty() && (e == simdjson::INCORRECT_TYPE || e == simdjson::NUMBER_ERROR ||
                            e == simdjson::NUMBER_OUT_OF_RANGE)) {
    return corrupt(std::string(where) + ": expected " + std::string(expected));
  }
  return corrupt(std::string(where) + ": malformed JSON (" + simdjson::error_message(e) + ")");
}

error parse_failure(const error_sink& sink, simdjson::error_code e, std::string_view json) {
  if (e == simdjson::DEPTH_ERROR) return sink.limit("JSON nesting too deep");
  if (e == simdjson::UTF8_ERROR) return sink.corrupt("not valid UTF-8");
  if (e == simdjson::MEMALLOC) {
    return sink.limit(std::string("cannot allocate the JSON parser: ") +
                      simdjson::error_message(e));
  }
  return sink.corrupt("malformed JSON " + locate_json_error(json) + "(" +
                      simdjson::error_message(e) + ")");
}

result<version_t> check_version(const error_sink& sink, dom::object root) {
  dom::element v;
  if (root.at_key("version").get(v)) return sink.corrupt("missing key \"version\"");
  dom::array a;
  if (v.get_array().get(a)) return sink.corrupt("version: expected an array [major, minor]");
  version_t ver;
  std::size_t n = 0;
  for (dom::element x : a) {
    std::uint64_t u;
    if (auto e = x.get_uint64().get(u)) {
      return sink.json(e, "version", "an array of two non-negative integers");
    }
    if (n == 0) ver.major = u;
    if (n == 1) ver.minor = u;
    ++n;
  }
  if (n != 2) return sink.corrupt("version: expected an array [major, minor]");
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

// ---- locate_json_error --------------------------------------------------------------------------

namespace {

namespace od = simdjson::ondemand;

/// Walks every value in order (On Demand checks what it reads, so reading all of it finds the
/// first fault) and keeps the path to the value being read.
class locator {
 public:
  explicit locator(od::document& doc, const char* base) : doc_(doc), base_(base) {}

  /// False at the first fault (then where() says where).
  bool walk(od::value& v, unsigned depth) {
    if (depth > max_depth) return false;
    od::json_type t;
    if (v.type().get(t)) return false;
    switch (t) {
      case od::json_type::array: {
        od::array a;
        if (v.get_array().get(a)) return false;
        const std::size_t len = path_.size();
        std::size_t i = 0;
        for (auto el : a) {
          path_.resize(len);
          path_ += "[" + std::to_string(i++) + "]";
          od::value x;
          if (std::move(el).get(x) || !walk(x, depth + 1)) return false;
        }
        path_.resize(len);
        return true;
      }
      case od::json_type::object: {
        od::object o;
        if (v.get_object().get(o)) return false;
        const std::size_t len = path_.size();
        for (auto fr : o) {
          path_.resize(len);
          od::field f;
          if (std::move(fr).get(f)) return false;
          std::string_view k;
          if (f.unescaped_key().get(k)) return false;
          if (!path_.empty()) path_ += '.';
          path_ += shown(k).substr(1, std::min<std::size_t>(k.size(), 64));
          if (!walk(f.value(), depth + 1)) return false;
        }
        path_.resize(len);
        return true;
      }
      case od::json_type::number: {
        od::number n;
        return !v.get_number().get(n);
      }
      case od::json_type::string: {
        std::string_view s;
        return !v.get_string().get(s);
      }
      case od::json_type::boolean: {
        bool b;
        return !v.get_bool().get(b);
      }
      case od::json_type::null: {
        bool is_null = false;
        return !v.is_null().get(is_null) && is_null;
      }
    }
    return false;
  }

  std::string where() const {
    std::string s = "at " + (path_.empty() ? std::string("the root") : path_);
    const char* at = nullptr;
    if (!doc_.current_location().get(at) && at >= base_) {
      s += " (byte " + std::to_string(at - base_) + ")";
    }
    return s + " ";
  }

 private:
  static constexpr unsigned max_depth = 256;  // (a deeper fault is reported without a place)
  od::document& doc_;
  const char* base_;
  std::string path_;
};

}  // namespace

std::string locate_json_error(std::string_view json) {
  od::parser parser;
  od::document doc;
  if (parser.iterate(json.data(), json.size(), json.size() + parse_padding).get(doc)) return {};
  od::json_type t;
  if (doc.type().get(t) || (t != od::json_type::object && t != od::json_type::array)) return {};
  od::value root;
  if (doc.get_value().get(root)) return {};
  locator l(doc, json.data());
  if (!l.walk(root, 1)) return l.where();
  const char* at = nullptr;
  if (!doc.current_location().get(at)) {
    return "after the root value (byte " + std::to_string(at - json.data()) + ") ";
  }
  return {};
}

}  // namespace ckpt::format::json
