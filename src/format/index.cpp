#include "format/index.hpp"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>

namespace ckpt::format {

static_assert(parse_padding >= simdjson::SIMDJSON_PADDING,
              "parse_padding must cover simdjson's padding requirement");

namespace {

namespace od = simdjson::ondemand;

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

void append_u64(std::string& out, std::uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_i64(std::string& out, std::int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

/// Appends `s` as a JSON string: '"' and '\\' escaped, control characters as \n, \t, ... or
/// \u00XX; every other byte (UTF-8 included) as is.
void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        const char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
        out.append(esc, 6);
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

void append_node(std::string& out, const tree& t, std::uint64_t& next_leaf) {
  switch (t.type()) {
    case tree::kind::none:
      out += "null";
      return;
    case tree::kind::leaf:
      out += "{\"leaf\":";
      append_u64(out, next_leaf++);
      out += '}';
      return;
    case tree::kind::dict: {
      out += "{\"dict\":[";
      bool first = true;
      for (const auto& [k, v] : t.items()) {
        if (!first) out += ',';
        first = false;
        out += '[';
        append_json_string(out, k);
        out += ',';
        append_node(out, v, next_leaf);
        out += ']';
      }
      out += "]}";
      return;
    }
    case tree::kind::list: {
      out += "{\"list\":[";
      bool first = true;
      for (const auto& v : t.elements()) {
        if (!first) out += ',';
        first = false;
        append_node(out, v, next_leaf);
      }
      out += "]}";
      return;
    }
  }
}

void append_version(std::string& out) {
  out += "\"version\":[";
  append_u64(out, version_major);
  out += ',';
  append_u64(out, version_minor);
  out += ']';
}

// ---------------------------------------------------------------------------------------------
// Parsing helpers
// ---------------------------------------------------------------------------------------------

/// Shows untrusted text in a message: at most 64 bytes, control bytes as '?'.
std::string shown(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 64)) {
    out += static_cast<unsigned char>(c) < 0x20 ? '?' : c;
  }
  if (s.size() > 64) out += "...";
  return out + "\"";
}

class parse_error_sink {
 public:
  explicit parse_error_sink(std::string_view file) : file_(file) {}

  error make(errc e, std::string_view msg) const {
    std::string m(file_);
    m += ": ";
    m += msg;
    return error(e, std::move(m));
  }
  error corrupt(std::string_view msg) const { return make(errc::corrupt, msg); }
  error limit(std::string_view msg) const { return make(errc::limit_exceeded, msg); }
  /// A simdjson failure while reading `where`.
  error json(simdjson::error_code e, std::string_view where, std::string_view expected = {}) const {
    if (e == simdjson::DEPTH_ERROR) {
      return limit(std::string(where) + ": JSON nesting too deep");
    }
    if (!expected.empty() && (e == simdjson::INCORRECT_TYPE || e == simdjson::NUMBER_ERROR ||
                              e == simdjson::NUMBER_OUT_OF_RANGE)) {
      return corrupt(std::string(where) + ": expected " + std::string(expected));
    }
    return corrupt(std::string(where) + ": malformed JSON (" + simdjson::error_message(e) + ")");
  }

 private:
  std::string_view file_;
};

#define CKPT_JSON(expr, where, expected)                                           \
  do {                                                                             \
    if (auto ckpt_json_e = (expr)) return sink.json(ckpt_json_e, where, expected); \
  } while (0)

constexpr std::string_view non_negative_integer = "a non-negative integer";

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

struct version_t {
  std::uint64_t major = 0;
  std::uint64_t minor = 0;
};

/// Reads "version" first (wherever it is in the root object), so that a newer major version is
/// reported as such rather than as whatever schema difference comes first; then rewinds.
result<version_t> check_version(const parse_error_sink& sink, od::document& doc) {
  od::object root;
  CKPT_JSON(doc.get_object().get(root), "root", "an object");
  od::value v;
  auto e = root.find_field_unordered("version").get(v);
  if (e == simdjson::NO_SUCH_FIELD) return sink.corrupt("missing key \"version\"");
  CKPT_JSON(e, "version", {});
  od::array a;
  CKPT_JSON(v.get_array().get(a), "version", "an array [major, minor]");
  version_t ver;
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
  if (ver.major != version_major) {
    return sink.make(errc::unsupported_version,
                     "format version " + std::to_string(ver.major) + "." +
                         std::to_string(ver.minor) +
                         (ver.major > version_major ? " is newer than this reader ("
                                                    : " is older than this reader (") +
                         std::to_string(version_major) + ".x)");
  }
  doc.rewind();
  return ver;
}

/// A plain file name: not empty, not "." or "..", no '/', no NUL, at most 255 bytes.
bool plain_file_name(std::string_view s) {
  if (s.empty() || s == "." || s == ".." || s.size() > 255) return false;
  return s.find('/') == std::string_view::npos && s.find('\0') == std::string_view::npos;
}

/// The field's key, unescaped. Keys written without escapes (all of ckpt's own) are matched
/// against `known` in the raw text without copying; `which` is the index in `known` or -1.
simdjson::error_code read_key(od::field& f, std::initializer_list<std::string_view> known,
                              int& which, std::string_view& key) {
  od::raw_json_string raw = f.key();
  int i = 0;
  for (std::string_view k : known) {
    if (raw.unsafe_is_equal(k)) {
      which = i;
      key = k;
      return simdjson::SUCCESS;
    }
    ++i;
  }
  if (auto e = f.unescaped_key().get(key)) return e;
  which = -1;
  i = 0;
  for (std::string_view k : known) {
    if (key == k) {
      which = i;
      break;
    }
    ++i;
  }
  return simdjson::SUCCESS;
}

/// parse_dtype without the string compares: names are at most 8 bytes, compared as integers.
std::uint64_t pack_name(std::string_view s) {
  std::uint64_t x = 0;
  std::memcpy(&x, s.data(), std::min<std::size_t>(s.size(), 8));
  return x;
}
result<dtype> fast_parse_dtype(std::string_view s) {
  static const auto table = [] {
    std::array<std::uint64_t, all_dtypes.size()> t{};
    for (std::size_t i = 0; i < all_dtypes.size(); ++i)
      t[i] = pack_name(dtype_name(all_dtypes[i]));
    return t;
  }();
  if (s.size() <= 8) {
    const std::uint64_t x = pack_name(s);
    for (std::size_t i = 0; i < table.size(); ++i) {
      // (The size check: pack_name pads with NULs, so "f32\0" packs like "f32".)
      if (table[i] == x && dtype_name(all_dtypes[i]).size() == s.size()) return all_dtypes[i];
    }
  }
  return parse_dtype(s);  // the error
}

/// True when the document has been read to its end (nothing but whitespace left).
bool at_end(od::document& doc) {
  return doc.current_location().error() == simdjson::OUT_OF_BOUNDS;
}

void append_escaped_key(std::string& path, std::string_view key) {
  for (char c : key) {
    if (c == '~')
      path += "~0";
    else if (c == '/')
      path += "~1";
    else
      path += c;
  }
}

// ---------------------------------------------------------------------------------------------
// Index parser
// ---------------------------------------------------------------------------------------------

class index_parser {
 public:
  index_parser(const parse_limits& limits, std::size_t json_bytes)
      : lim_(limits), max_depth_(std::min<std::uint32_t>(limits.max_depth, 1024)) {
    // A tree node takes at least 4 bytes of JSON ("null"); most take far more.
    nodes_.reserve(std::min<std::size_t>(json_bytes / 64, 1u << 20));
  }

  result<index> run(od::document& doc);

 private:
  struct tnode {
    tree::kind kind;
    std::uint32_t children = 0;  // dict / list
    std::uint64_t leaf = 0;      // leaf
    std::string_view key;        // the key under a dict parent (in the parser's string buffer)
  };

  result<void> parse_files(od::value& v);
  result<void> parse_node(od::value v, std::uint32_t depth, std::string_view key);
  result<void> parse_leaves(od::value& v);
  result<void> parse_leaf(od::object& o);
  result<void> parse_chunk(od::value& v, leaf_entry& le, std::string_view where);
  result<void> check_files();
  result<void> check_chunks();
  result<tree> build(std::size_t& pos, std::string& path);
  std::string leaf_name(std::size_t i) const;
  /// None, dict and list nodes are capped like leaves, so memory stays bounded.
  result<void> count_inner_node() {
    if (++inner_nodes_ > lim_.max_tree_nodes) {
      return sink.limit("tree: more than " + std::to_string(lim_.max_tree_nodes) +
                        " None/dict/list nodes");
    }
    return success();
  }
  void note_unknown(std::string_view key) {
    if (unknown_.empty()) unknown_ = std::string(key.substr(0, 64));
  }

  const parse_limits& lim_;
  const std::uint32_t max_depth_;
  parse_error_sink sink{"index.json"};
  index ix_;
  std::vector<tnode> nodes_;
  std::uint64_t tree_leaves_ = 0;
  std::uint64_t inner_nodes_ = 0;
  std::uint64_t total_chunks_ = 0;
  std::string unknown_;
};

std::string index_parser::leaf_name(std::size_t i) const {
  std::string s = "leaf " + std::to_string(i);
  if (i < ix_.leaves.size() && !ix_.leaves[i].path.empty()) s += " " + shown(ix_.leaves[i].path);
  return s;
}

result<index> index_parser::run(od::document& doc) {
  CKPT_TRY(version_t ver, check_version(sink, doc));
  od::object root;
  CKPT_JSON(doc.get_object().get(root), "root", "an object");

  constexpr unsigned k_format = 1, k_version = 2, k_files = 4, k_tree = 8, k_leaves = 16;
  unsigned seen = 0;
  auto once = [&](unsigned bit, std::string_view key) -> result<void> {
    if (seen & bit) return sink.corrupt("duplicate key " + shown(key));
    seen |= bit;
    return success();
  };
  for (auto fr : root) {
    od::field f;
    CKPT_JSON(std::move(fr).get(f), "root", {});
    std::string_view key;
    int which;
    CKPT_JSON(read_key(f, {"format", "version", "files", "tree", "leaves"}, which, key), "root key",
              {});
    od::value& v = f.value();
    if (which == 0) {
      CKPT_TRY(once(k_format, key));
      CKPT_GET_STR(std::string_view s, v, "format");
      if (s != "ckpt-index") {
        return sink.corrupt("format is " + shown(s) + ", expected \"ckpt-index\"");
      }
    } else if (which == 1) {
      CKPT_TRY(once(k_version, key));  // value already checked by check_version
    } else if (which == 2) {
      CKPT_TRY(once(k_files, key));
      CKPT_TRY(parse_files(v));
    } else if (which == 3) {
      CKPT_TRY(once(k_tree, key));
      CKPT_TRY(parse_node(v, 1, {}));
    } else if (which == 4) {
      CKPT_TRY(once(k_leaves, key));
      CKPT_TRY(parse_leaves(v));
    } else {
      note_unknown(key);
    }
  }
  if (!at_end(doc)) return sink.corrupt("trailing content after the root object");
  for (auto [bit, name] : {std::pair{k_format, "format"},
                           {k_version, "version"},
                           {k_files, "files"},
                           {k_tree, "tree"},
                           {k_leaves, "leaves"}}) {
    if (!(seen & bit)) return sink.corrupt(std::string("missing key \"") + name + "\"");
  }
  if (!unknown_.empty() && ver.minor <= version_minor) {
    return sink.corrupt("unknown key " + shown(unknown_) + " in a version " +
                        std::to_string(ver.major) + "." + std::to_string(ver.minor) + " index");
  }

  CKPT_TRY(check_files());
  CKPT_TRY(check_chunks());
  if (tree_leaves_ != ix_.leaves.size()) {
    return sink.corrupt("tree references " + std::to_string(tree_leaves_) +
                        " leaves but \"leaves\" holds " + std::to_string(ix_.leaves.size()));
  }
  std::size_t pos = 0;
  std::string path;
  CKPT_TRY(ix_.structure, build(pos, path));
  return std::move(ix_);
}

result<void> index_parser::parse_files(od::value& v) {
  od::array a;
  CKPT_JSON(v.get_array().get(a), "files", "an array");
  for (auto el : a) {
    const std::string where = "files[" + std::to_string(ix_.files.size()) + "]";
    if (ix_.files.size() >= lim_.max_files) {
      return sink.limit("more than " + std::to_string(lim_.max_files) + " files");
    }
    od::object o;
    CKPT_JSON(el.get_object().get(o), where, "an object");
    file_entry fe;
    bool has_name = false, has_size = false;
    for (auto fr : o) {
      od::field f;
      CKPT_JSON(std::move(fr).get(f), where, {});
      std::string_view key;
      int which;
      CKPT_JSON(read_key(f, {"name", "size"}, which, key), where, {});
      od::value& fv = f.value();
      if (which == 0) {
        if (has_name) return sink.corrupt(where + ": duplicate key \"name\"");
        has_name = true;
        CKPT_GET_STR(std::string_view s, fv, where + ".name");
        if (!plain_file_name(s)) {
          return sink.corrupt(where + ": file name " + shown(s) +
                              " is not a plain file name (no '/', '..', '.', NUL or empty)");
        }
        fe.name = std::string(s);
      } else if (which == 1) {
        if (has_size) return sink.corrupt(where + ": duplicate key \"size\"");
        has_size = true;
        CKPT_GET_U64(fe.size, fv, where + ".size");
      } else {
        note_unknown(key);
      }
    }
    if (!has_name) return sink.corrupt(where + ": missing key \"name\"");
    if (!has_size) return sink.corrupt(where + ": missing key \"size\"");
    if (fe.size > lim_.max_file_bytes) {
      return sink.limit(where + ": file " + shown(fe.name) + " claims " + std::to_string(fe.size) +
                        " bytes, more than the cap of " + std::to_string(lim_.max_file_bytes));
    }
    ix_.files.push_back(std::move(fe));
  }
  return success();
}

result<void> index_parser::parse_node(od::value v, std::uint32_t depth, std::string_view key) {
  if (depth > max_depth_) {
    return sink.limit("tree: nesting deeper than " + std::to_string(max_depth_) + " levels");
  }
  od::json_type t;
  CKPT_JSON(v.type().get(t), "tree", {});
  if (t == od::json_type::null) {
    bool is_null = false;
    CKPT_JSON(v.is_null().get(is_null), "tree", {});
    if (!is_null) return sink.corrupt("tree: malformed null");
    CKPT_TRY(count_inner_node());
    nodes_.push_back({tree::kind::none, 0, 0, key});
    return success();
  }
  if (t != od::json_type::object) {
    return sink.corrupt("tree: a node must be null or an object with one key leaf, dict or list");
  }
  od::object o;
  CKPT_JSON(v.get_object().get(o), "tree", "an object");
  std::size_t fields = 0;
  for (auto fr : o) {
    if (fields++ > 0) return sink.corrupt("tree: a node object must have exactly one key");
    od::field f;
    CKPT_JSON(std::move(fr).get(f), "tree", {});
    std::string_view kind;
    int which;
    CKPT_JSON(read_key(f, {"leaf", "dict", "list"}, which, kind), "tree", {});
    od::value& cv = f.value();
    if (which == 0) {
      CKPT_GET_U64(std::uint64_t i, cv, "tree leaf");
      if (i != tree_leaves_) {
        return sink.corrupt(
            "tree: leaf " + std::to_string(i) +
            (i < tree_leaves_ ? " referenced twice or out of order" : " referenced out of order") +
            " (expected leaf " + std::to_string(tree_leaves_) + " next)");
      }
      if (++tree_leaves_ > lim_.max_leaves) {
        return sink.limit("tree: more than " + std::to_string(lim_.max_leaves) + " leaves");
      }
      nodes_.push_back({tree::kind::leaf, 0, i, key});
    } else if (which == 1 || which == 2) {
      const bool dict = which == 1;
      od::array a;
      CKPT_JSON(cv.get_array().get(a), dict ? "tree dict" : "tree list", "an array");
      CKPT_TRY(count_inner_node());
      const std::size_t self = nodes_.size();
      nodes_.push_back({dict ? tree::kind::dict : tree::kind::list, 0, 0, key});
      std::uint32_t children = 0;
      for (auto el : a) {
        od::value child;
        CKPT_JSON(el.get(child), "tree", {});
        if (children == std::numeric_limits<std::uint32_t>::max()) {
          return sink.limit("tree: too many children in one node");
        }
        ++children;
        if (!dict) {
          CKPT_TRY(parse_node(child, depth + 1, {}));
          continue;
        }
        od::array pair;
        CKPT_JSON(child.get_array().get(pair), "tree dict item", "an array [key, node]");
        std::size_t n = 0;
        std::string_view k;
        for (auto pe : pair) {
          od::value pv;
          CKPT_JSON(pe.get(pv), "tree dict item", {});
          if (n == 0) {
            CKPT_GET_STR(k, pv, "tree dict key");
            if (k.size() > lim_.max_key_bytes) {
              return sink.limit("tree: dict key " + shown(k) + " is longer than " +
                                std::to_string(lim_.max_key_bytes) + " bytes");
            }
          } else if (n == 1) {
            CKPT_TRY(parse_node(pv, depth + 1, k));
          } else {
            return sink.corrupt("tree: dict item for key " + shown(k) +
                                " has more than two elements");
          }
          ++n;
        }
        if (n != 2) return sink.corrupt("tree: a dict item must be [key, node]");
      }
      nodes_[self].children = children;
    } else {
      return sink.corrupt("tree: unknown node kind " + shown(kind) +
                          " (expected leaf, dict or list)");
    }
  }
  if (fields == 0) return sink.corrupt("tree: a node object must have exactly one key");
  return success();
}

result<void> index_parser::parse_leaves(od::value& v) {
  od::array a;
  CKPT_JSON(v.get_array().get(a), "leaves", "an array");
  // When the tree came first (as writers emit it), its leaf count is the expected length.
  ix_.leaves.reserve(std::min<std::uint64_t>(tree_leaves_, lim_.max_leaves));
  for (auto el : a) {
    if (ix_.leaves.size() >= lim_.max_leaves) {
      return sink.limit("more than " + std::to_string(lim_.max_leaves) + " leaves");
    }
    od::object o;
    CKPT_JSON(el.get_object().get(o), "leaves[" + std::to_string(ix_.leaves.size()) + "]",
              "an object");
    ix_.leaves.emplace_back();
    CKPT_TRY(parse_leaf(o));
  }
  return success();
}

result<void> index_parser::parse_leaf(od::object& o) {
  const std::size_t li = ix_.leaves.size() - 1;
  leaf_entry& le = ix_.leaves.back();
  constexpr unsigned k_path = 1, k_dtype = 2, k_shape = 4, k_chunks = 8;
  unsigned seen = 0;
  std::uint64_t raw_sum = 0;
  for (auto fr : o) {
    od::field f;
    CKPT_JSON(std::move(fr).get(f), leaf_name(li), {});
    std::string_view key;
    int which;
    CKPT_JSON(read_key(f, {"path", "dtype", "shape", "chunks"}, which, key), leaf_name(li), {});
    od::value& v = f.value();
    const unsigned bit = which < 0 ? 0u : 1u << which;
    if (bit == 0) {
      note_unknown(key);
      continue;
    }
    if (seen & bit) return sink.corrupt(leaf_name(li) + ": duplicate key " + shown(key));
    seen |= bit;
    switch (bit) {
      case k_path: {
        CKPT_GET_STR(std::string_view s, v, leaf_name(li) + ".path");
        le.path = std::string(s);
        break;
      }
      case k_dtype: {
        CKPT_GET_STR(std::string_view s, v, leaf_name(li) + ".dtype");
        auto t = fast_parse_dtype(s);
        if (!t) return sink.corrupt(leaf_name(li) + ": " + t.error().message());
        le.dtype = t.value();
        break;
      }
      case k_shape: {
        od::array a;
        CKPT_JSON(v.get_array().get(a), leaf_name(li) + ".shape", "an array of extents");
        for (auto el : a) {
          if (le.shape.size() >= lim_.max_rank) {
            return sink.limit(leaf_name(li) + ": rank above the cap of " +
                              std::to_string(lim_.max_rank));
          }
          std::int64_t x;
          CKPT_JSON(el.get_int64().get(x), leaf_name(li) + ".shape", "integer extents");
          if (x < 0) {
            return sink.corrupt(leaf_name(li) + ": negative extent " + std::to_string(x) +
                                " in shape");
          }
          le.shape.push_back(x);
        }
        break;
      }
      case k_chunks: {
        od::array a;
        CKPT_JSON(v.get_array().get(a), leaf_name(li) + ".chunks", "an array");
        for (auto el : a) {
          if (++total_chunks_ > lim_.max_chunks) {
            return sink.limit("more than " + std::to_string(lim_.max_chunks) + " chunks");
          }
          od::value cv;
          CKPT_JSON(el.get(cv), leaf_name(li) + ".chunks", {});
          CKPT_TRY(parse_chunk(cv, le, {}));
          const std::uint64_t raw = le.chunks.back().raw_size;
          if (raw_sum > std::numeric_limits<std::uint64_t>::max() - raw) {
            return sink.corrupt(leaf_name(li) + ": chunk sizes overflow");
          }
          raw_sum += raw;
        }
        break;
      }
    }
  }
  if (!(seen & k_path)) return sink.corrupt(leaf_name(li) + ": missing key \"path\"");
  if (!(seen & k_dtype)) return sink.corrupt(leaf_name(li) + ": missing key \"dtype\"");
  if (!(seen & k_shape)) return sink.corrupt(leaf_name(li) + ": missing key \"shape\"");
  if (!(seen & k_chunks)) return sink.corrupt(leaf_name(li) + ": missing key \"chunks\"");
  auto bytes = byte_size(le.dtype, le.shape);
  if (!bytes) return sink.corrupt(leaf_name(li) + ": " + bytes.error().message());
  le.num_bytes = bytes.value();
  if (raw_sum != le.num_bytes) {
    return sink.corrupt(leaf_name(li) + ": chunks hold " + std::to_string(raw_sum) +
                        " raw bytes, expected " + std::to_string(le.num_bytes) + " for " +
                        std::string(dtype_name(le.dtype)) + shape_to_string(le.shape));
  }
  return success();
}

result<void> index_parser::parse_chunk(od::value& v, leaf_entry& le, std::string_view) {
  const std::size_t li = ix_.leaves.size() - 1;
  auto where = [&] { return leaf_name(li) + ": chunk " + std::to_string(le.chunks.size()); };
  od::array a;
  CKPT_JSON(v.get_array().get(a), where(), "[file, offset, stored, raw, codec, xxh3]");
  chunk_entry c;
  std::uint64_t u[4] = {};
  std::string_view codec_s, hex_s;
  std::size_t n = 0;
  for (auto el : a) {
    od::value x;
    CKPT_JSON(el.get(x), where(), {});
    if (n < 4) {
      CKPT_JSON(x.get_uint64().get(u[n]), where(),
                "[file, offset, stored, raw, codec, xxh3] "
                "with non-negative integers");
    } else if (n == 4) {
      CKPT_JSON(x.get_string().get(codec_s), where(), "a codec name string");
    } else if (n == 5) {
      CKPT_JSON(x.get_string().get(hex_s), where(), "a checksum string");
    } else {
      return sink.corrupt(where() + ": more than 6 elements");
    }
    ++n;
  }
  if (n != 6) {
    return sink.corrupt(where() + ": expected [file, offset, stored, raw, codec, xxh3], got " +
                        std::to_string(n) + " elements");
  }
  if (u[0] > std::numeric_limits<std::uint32_t>::max()) {
    return sink.corrupt(where() + ": file index " + std::to_string(u[0]) + " out of range");
  }
  c.file = static_cast<std::uint32_t>(u[0]);
  c.offset = u[1];
  c.stored_size = u[2];
  c.raw_size = u[3];
  auto cd = parse_codec(codec_s);
  if (!cd) return sink.corrupt(where() + ": " + cd.error().message());
  c.codec = cd.value();
  auto h = parse_checksum_hex(hex_s);
  if (!h) return sink.corrupt(where() + ": " + h.error().message());
  c.xxh3 = h.value();
  if (c.raw_size == 0 || c.stored_size == 0) {
    return sink.corrupt(where() + ": empty chunk (stored " + std::to_string(c.stored_size) +
                        ", raw " + std::to_string(c.raw_size) + ")");
  }
  if (c.codec == codec::raw && c.stored_size != c.raw_size) {
    return sink.corrupt(where() + ": raw chunk stores " + std::to_string(c.stored_size) +
                        " bytes for " + std::to_string(c.raw_size) + " raw bytes");
  }
  if (c.codec != codec::raw &&
      (c.raw_size > max_lz4_chunk || c.stored_size > encode_bound(c.raw_size))) {
    return sink.corrupt(where() + ": " + std::string(codec_name(c.codec)) + " chunk of " +
                        std::to_string(c.stored_size) + " stored bytes for " +
                        std::to_string(c.raw_size) + " raw bytes is impossible");
  }
  if (c.offset > std::numeric_limits<std::uint64_t>::max() - c.stored_size) {
    return sink.corrupt(where() + ": offset + size overflows");
  }
  le.chunks.push_back(c);
  return success();
}

result<void> index_parser::check_files() {
  if (ix_.files.size() < 2) return success();
  std::vector<std::string_view> names;
  names.reserve(ix_.files.size());
  for (const auto& f : ix_.files)
    names.push_back(f.name);
  std::sort(names.begin(), names.end());
  auto dup = std::adjacent_find(names.begin(), names.end());
  if (dup != names.end()) return sink.corrupt("file " + shown(*dup) + " listed twice");
  return success();
}

result<void> index_parser::check_chunks() {
  // Bounds, then overlap. Writers emit chunks in increasing offset order per file, so the
  // common case is a linear scan; anything else falls back to a sort.
  struct extent {
    std::uint64_t begin, end;
    std::uint32_t file;
    std::uint32_t chunk;
    std::size_t leaf;
  };
  std::vector<std::uint64_t> last_end(ix_.files.size(), 0);
  std::vector<std::size_t> last_leaf(ix_.files.size(), 0);
  bool sorted = true;
  for (std::size_t li = 0; li < ix_.leaves.size(); ++li) {
    const auto& le = ix_.leaves[li];
    for (std::size_t ci = 0; ci < le.chunks.size(); ++ci) {
      const chunk_entry& c = le.chunks[ci];
      if (c.file >= ix_.files.size()) {
        return sink.corrupt(leaf_name(li) + ": chunk " + std::to_string(ci) + ": file index " +
                            std::to_string(c.file) + " out of range (" +
                            std::to_string(ix_.files.size()) + " files)");
      }
      const file_entry& fe = ix_.files[c.file];
      const std::uint64_t end = c.offset + c.stored_size;  // overflow checked at parse
      if (end > fe.size) {
        return sink.corrupt(leaf_name(li) + ": chunk " + std::to_string(ci) + " [" +
                            std::to_string(c.offset) + ", " + std::to_string(end) +
                            ") lies past the end of " + shown(fe.name) + " (" +
                            std::to_string(fe.size) + " bytes)");
      }
      if (c.offset < last_end[c.file]) sorted = false;
      last_end[c.file] = end;
      last_leaf[c.file] = li;
    }
  }
  if (sorted) return success();
  std::vector<extent> ex;
  ex.reserve(total_chunks_);
  for (std::size_t li = 0; li < ix_.leaves.size(); ++li) {
    const auto& chunks = ix_.leaves[li].chunks;
    for (std::size_t ci = 0; ci < chunks.size(); ++ci) {
      const auto& c = chunks[ci];
      ex.push_back(
          {c.offset, c.offset + c.stored_size, c.file, static_cast<std::uint32_t>(ci), li});
    }
  }
  std::sort(ex.begin(), ex.end(), [](const extent& a, const extent& b) {
    return a.file != b.file ? a.file < b.file : a.begin < b.begin;
  });
  for (std::size_t i = 1; i < ex.size(); ++i) {
    const extent& a = ex[i - 1];
    const extent& b = ex[i];
    if (a.file == b.file && b.begin < a.end) {
      return sink.corrupt(leaf_name(b.leaf) + ": chunk " + std::to_string(b.chunk) + " at [" +
                          std::to_string(b.begin) + ", " + std::to_string(b.end) + ") overlaps " +
                          leaf_name(a.leaf) + ": chunk " + std::to_string(a.chunk) + " at [" +
                          std::to_string(a.begin) + ", " + std::to_string(a.end) + ") in " +
                          shown(ix_.files[a.file].name));
    }
  }
  return success();
}

result<tree> index_parser::build(std::size_t& pos, std::string& path) {
  const tnode& n = nodes_[pos++];
  switch (n.kind) {
    case tree::kind::none:
      return tree();
    case tree::kind::leaf: {
      const leaf_entry& le = ix_.leaves[n.leaf];
      if (le.path != path) {
        return sink.corrupt("leaf " + std::to_string(n.leaf) + ": path " + shown(le.path) +
                            " does not match the tree's path " + shown(path));
      }
      auto a = array::spec(le.dtype, le.shape);
      if (!a) return sink.corrupt(leaf_name(n.leaf) + ": " + a.error().message());
      return tree(std::move(a).value());
    }
    case tree::kind::dict: {
      tree t = tree::dict();
      t.reserve(n.children);
      const std::size_t len = path.size();
      for (std::uint32_t i = 0; i < n.children; ++i) {
        const std::string_view key = nodes_[pos].key;
        if (len != 0) path += '/';
        append_escaped_key(path, key);
        CKPT_TRY(tree sub, build(pos, path));
        path.resize(len);
        const std::size_t before = t.size();
        t.set(std::string(key), std::move(sub));
        if (t.size() == before) {
          return sink.corrupt("tree: duplicate key " + shown(key) + " in dict " + shown(path));
        }
      }
      return t;
    }
    case tree::kind::list: {
      tree t = tree::list();
      t.reserve(n.children);
      const std::size_t len = path.size();
      for (std::uint32_t i = 0; i < n.children; ++i) {
        if (len != 0) path += '/';
        append_u64(path, i);
        CKPT_TRY(tree sub, build(pos, path));
        path.resize(len);
        t.append(std::move(sub));
      }
      return t;
    }
  }
  return sink.corrupt("tree: bad node");
}

}  // namespace

bool is_valid_utf8(std::string_view s) noexcept {
  return simdjson::validate_utf8(s.data(), s.size());
}

std::string data_file_name(std::uint32_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "data-%05u.bin", i);
  return buf;
}

std::string encode_index(const index& ix) {
  std::string out;
  std::size_t estimate = 128 + ix.files.size() * 48;
  for (const auto& le : ix.leaves)
    estimate += 64 + 2 * le.path.size() + le.chunks.size() * 64;
  out.reserve(estimate);
  out += "{\"format\":\"ckpt-index\",";
  append_version(out);
  out += ",\"files\":[";
  for (std::size_t i = 0; i < ix.files.size(); ++i) {
    if (i) out += ',';
    out += "{\"name\":";
    append_json_string(out, ix.files[i].name);
    out += ",\"size\":";
    append_u64(out, ix.files[i].size);
    out += '}';
  }
  out += "],\"tree\":";
  std::uint64_t next_leaf = 0;
  append_node(out, ix.structure, next_leaf);
  out += ",\"leaves\":[";
  for (std::size_t i = 0; i < ix.leaves.size(); ++i) {
    const leaf_entry& le = ix.leaves[i];
    if (i) out += ',';
    out += "{\"path\":";
    append_json_string(out, le.path);
    out += ",\"dtype\":\"";
    out += dtype_name(le.dtype);
    out += "\",\"shape\":[";
    for (std::size_t d = 0; d < le.shape.size(); ++d) {
      if (d) out += ',';
      append_i64(out, le.shape[d]);
    }
    out += "],\"chunks\":[";
    for (std::size_t c = 0; c < le.chunks.size(); ++c) {
      const chunk_entry& ch = le.chunks[c];
      if (c) out += ',';
      out += '[';
      append_u64(out, ch.file);
      out += ',';
      append_u64(out, ch.offset);
      out += ',';
      append_u64(out, ch.stored_size);
      out += ',';
      append_u64(out, ch.raw_size);
      out += ",\"";
      out += codec_name(ch.codec);
      out += "\",\"";
      out += checksum_hex(ch.xxh3);
      out += "\"]";
    }
    out += "]}";
  }
  out += "]}";
  return out;
}

namespace {

/// simdjson's On-Demand parser, reused per thread for small documents (its buffers grow to the
/// largest document seen); large documents get a parser of their own so the memory goes back.
template <class F>
auto with_parser(std::string_view json, F&& f) -> decltype(f(std::declval<od::document&>())) {
  constexpr std::size_t reuse_below = 64u << 20;
  thread_local od::parser cached;
  od::parser local;
  od::parser& p = json.size() < reuse_below ? cached : local;
  const parse_error_sink sink{"JSON"};
  od::document doc;
  auto e =
      p.iterate(simdjson::padded_string_view(json.data(), json.size(), json.size() + parse_padding))
          .get(doc);
  if (e) return error(errc::corrupt, simdjson::error_message(e));
  return f(doc);
}

}  // namespace

result<index> parse_index(std::string_view json, const parse_limits& limits) {
  if (json.size() > limits.max_index_bytes) {
    return fail(errc::limit_exceeded, "index.json: " + std::to_string(json.size()) +
                                          " bytes, more than the cap of " +
                                          std::to_string(limits.max_index_bytes));
  }
  if (json.empty()) return fail(errc::corrupt, "index.json: empty");
  auto r = with_parser(json, [&](od::document& doc) -> result<index> {
    index_parser p(limits, json.size());
    return p.run(doc);
  });
  if (!r && r.error() == errc::corrupt && r.error().message().rfind("index.json", 0) != 0) {
    return fail(std::move(r).error().with_context("index.json: malformed JSON"));
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Commit marker
// ---------------------------------------------------------------------------------------------

namespace {

void append_file_ref(std::string& out, std::string_view key, std::uint64_t bytes, std::uint64_t h) {
  out += ",\"";
  out += key;
  out += "\":{\"bytes\":";
  append_u64(out, bytes);
  out += ",\"xxh3\":\"";
  out += checksum_hex(h);
  out += "\"}";
}

result<void> parse_file_ref(const parse_error_sink& sink, od::value& v, std::string_view key,
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
  append_version(out);
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
    const parse_error_sink sink{"COMMIT"};
    CKPT_TRY(version_t ver, check_version(sink, doc));
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

}  // namespace ckpt::format
