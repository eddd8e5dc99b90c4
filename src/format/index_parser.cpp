// index.json parsed and validated (docs/FORMAT.md) over simdjson On Demand: simdjson's first
// stage checks UTF-8 and indexes the structure, then one walk reads every value in order and
// checks the schema as it builds the leaf table and the tree's node list (keys known, none twice
// (On Demand does not look for duplicates itself), types, the caps of parse_limits, tree
// nesting); values of unknown keys are walked too, so that they are checked as JSON (On Demand
// skips what is not read without checking it). index_checks.cpp does the cross checks.
// On Demand rather than DOM: with every check on, the DOM walk measured ~1.5x faster on the
// small workload's index, but a DOM costs ~4x the text (tape, strings, structure) before any
// cap applies: a hostile 276 MiB index of 10^7 files took 1.5 GiB, over the bound of
// test_hostile_load ("no per-entry blowup"). On Demand stops at the cap with ~1x the text.
#include "format/index.hpp"
#include "format/index_checks.hpp"
#include "format/json_support.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <span>

namespace ckpt::format {

namespace {

namespace od = simdjson::ondemand;
using json::non_negative_integer;
using json::shown;

/// A plain file name: not empty, not "." or "..", no '/', no NUL, at most 255 bytes.
bool plain_file_name(std::string_view s) {
  if (s.empty() || s == "." || s == ".." || s.size() > 255) return false;
  return s.find('/') == std::string_view::npos && s.find('\0') == std::string_view::npos;
}

/// parse_dtype without the string compares: names are at most 8 bytes, compared as integers.
std::uint64_t pack_name(std::string_view s) {
  // (Byte by byte: a memcpy of a variable size would be a library call.)
  std::uint64_t x = 0;
  const std::size_t n = std::min<std::size_t>(s.size(), 8);
  for (std::size_t i = 0; i < n; ++i)
    x |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[i])) << (8 * i);
  return x;
}
struct dtype_entry {
  std::uint64_t packed;
  std::size_t size;  // of the name
};
// (Namespace scope, so a lookup pays no guard of a function-local static.)
const std::array<dtype_entry, all_dtypes.size()> dtype_table = [] {
  std::array<dtype_entry, all_dtypes.size()> t{};
  for (std::size_t i = 0; i < all_dtypes.size(); ++i) {
    t[i] = {pack_name(dtype_name(all_dtypes[i])), dtype_name(all_dtypes[i]).size()};
  }
  return t;
}();
/// False when `s` is no dtype name (parse_dtype then says why).
bool fast_parse_dtype(std::string_view s, dtype& t) {
  if (s.size() > 8) return false;
  const std::uint64_t x = pack_name(s);
  for (std::size_t i = 0; i < dtype_table.size(); ++i) {
    // (The size check: pack_name pads with NULs, so "f32\0" packs like "f32".)
    if (dtype_table[i].packed == x && dtype_table[i].size == s.size()) {
      t = all_dtypes[i];
      return true;
    }
  }
  return false;
}

/// byte_size's fast path (same rules): false when byte_size would fail or a zero extent hides
/// an overflow, so that byte_size decides.
bool fast_byte_size(dtype t, std::span<const std::int64_t> extents, std::uint64_t& bytes) {
  constexpr std::uint64_t max =
      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t n = 1;
  for (std::int64_t e : extents) {
    if (e < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<std::uint64_t>(e), &n) || n > max) return false;
  }
  const std::uint64_t sz = dtype_size(t);
  if (n > max / sz) return false;
  bytes = n * sz;
  return true;
}

int hex_digit(char ch) noexcept {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return -1;  // (lowercase only, like every hex string of the format)
}

/// `key == lit` with the literal's length known at compile time (so no call to memcmp).
template <std::size_t N>
bool is(std::string_view key, const char (&lit)[N]) noexcept {
  return key.size() == N - 1 && std::memcmp(key.data(), lit, N - 1) == 0;
}

/// A failed simdjson call `expr` while reading `where` (only built then), which asked for
/// `expected`.
#define CKPT_OD(expr, where, expected)                                         \
  do {                                                                         \
    if (auto ckpt_e = (expr)) return fail(sink.json(ckpt_e, where, expected)); \
  } while (0)

/// The next member of an object being iterated: its unescaped key and its value.
#define CKPT_OD_FIELD(fr, f, key, where)    \
  od::field f;                              \
  CKPT_OD(std::move(fr).get(f), where, {}); \
  std::string_view key;                     \
  CKPT_OD(f.unescaped_key().get(key), where, {})

class index_parser {
 public:
  index_parser(const parse_limits& limits, std::size_t json_size)
      : lim_(limits), max_depth_(std::min<std::uint32_t>(limits.max_depth, 1024)) {
    // A tree node takes at least 4 bytes of JSON ("null"); most take far more.
    ix_.nodes.reserve(std::min<std::size_t>(json_size / 64, 1u << 20));
  }

  result<index> run(od::document& doc);

 private:
  // The walks return false with the error kept in err_.
  bool fail(error e) {
    err_ = std::move(e);
    return false;
  }
  bool read_version(od::document& doc, json::version_t& ver);
  /// A key not in this format version: noted (the first one is reported at our own version),
  /// its value read through (checked as JSON, nesting capped like the tree's).
  bool unknown_key(std::string_view key, od::value& v) {
    if (unknown_.empty()) unknown_ = std::string(key.substr(0, 64));
    return skip(v, max_depth_, key);
  }
  /// Reads `v` through, at most `levels` levels of nested arrays and objects.
  bool skip(od::value& v, std::uint32_t levels, std::string_view key);
  /// Appends a node; `key` is its key under a dict parent (copied to ix_.keys).
  void add_node(tree::kind kind, std::string_view key) {
    tree_node n;
    n.kind = kind;
    n.key_offset = ix_.keys.size();
    n.key_size = static_cast<std::uint32_t>(key.size());  // (capped by max_key_bytes)
    ix_.keys += key;
    ix_.nodes.push_back(n);
  }
  /// None, dict and list nodes are capped like leaves, so memory stays bounded.
  bool count_inner_node() {
    if (++inner_nodes_ > lim_.max_tree_nodes) {
      return fail(
          sink.limit("tree: " + detail::too_many(lim_.max_tree_nodes, "None/dict/list nodes")));
    }
    return true;
  }
  bool parse_files(od::value& v);
  bool parse_node(od::value& v, std::uint32_t depth, std::string_view key);
  bool parse_dict_item(od::value& item, std::uint32_t depth);
  bool parse_leaves(od::value& v);
  bool parse_leaf(od::object& o, std::size_t li);
  bool parse_shape(od::value& v, std::size_t li, leaf_entry& le);
  bool parse_chunk(od::value& v, std::size_t li, leaf_entry& le);
  template <class Where>
  bool parse_runs(od::value& v, const Where& where, std::vector<fill_run>& runs);
  std::string leaf_name(std::size_t i) const { return detail::leaf_name(ix_.leaves, i); }

  const parse_limits& lim_;
  const std::uint32_t max_depth_;
  json::error_sink sink{"index.json"};
  error err_;
  std::string unknown_;  ///< the first key not in this format version
  json::version_t ver_;  ///< the index's version
  index ix_;
  std::uint64_t tree_leaves_ = 0;
  std::uint64_t inner_nodes_ = 0;
  std::uint64_t total_chunks_ = 0;
};

bool index_parser::skip(od::value& v, std::uint32_t levels, std::string_view key) {
  const std::string where(key.substr(0, 64));
  od::json_type t;
  CKPT_OD(v.type().get(t), where, {});
  switch (t) {
    case od::json_type::array: {
      if (levels == 0) return fail(sink.limit(where + ": JSON nesting too deep"));
      od::array a;
      CKPT_OD(v.get_array().get(a), where, {});
      for (auto el : a) {
        od::value x;
        CKPT_OD(std::move(el).get(x), where, {});
        if (!skip(x, levels - 1, key)) return false;
      }
      return true;
    }
    case od::json_type::object: {
      if (levels == 0) return fail(sink.limit(where + ": JSON nesting too deep"));
      od::object o;
      CKPT_OD(v.get_object().get(o), where, {});
      for (auto fr : o) {
        CKPT_OD_FIELD(fr, f, k, where);
        if (!skip(f.value(), levels - 1, key)) return false;
      }
      return true;
    }
    case od::json_type::number: {
      double d;  // (any JSON number that a double holds, as an integer need not fit 64 bits)
      CKPT_OD(v.get_double().get(d), where, {});
      return true;
    }
    case od::json_type::string: {
      std::string_view s;
      CKPT_OD(v.get_string().get(s), where, {});
      return true;
    }
    case od::json_type::boolean: {
      bool b;
      CKPT_OD(v.get_bool().get(b), where, {});
      return true;
    }
    case od::json_type::null: {
      bool null = false;
      CKPT_OD(v.is_null().get(null), where, {});
      if (!null) return fail(sink.json(simdjson::N_ATOM_ERROR, where, {}));
      return true;
    }
  }
  return fail(sink.json(simdjson::TAPE_ERROR, where, {}));
}

/// Finds "version" in the root object (ckpt writes it second), so that a newer major version is
/// reported as such rather than as whatever schema difference comes first; then rewinds.
bool index_parser::read_version(od::document& doc, json::version_t& ver) {
  od::object root;
  CKPT_OD(doc.get_object().get(root), "root", "an object");
  for (auto fr : root) {
    CKPT_OD_FIELD(fr, f, key, "root");
    if (key != "version") continue;  // (the value is skipped here, read by the main walk)
    od::array a;
    if (f.value().get_array().get(a)) {
      return fail(sink.corrupt("version: expected an array [major, minor]"));
    }
    std::size_t n = 0;
    for (auto el : a) {
      std::uint64_t u;
      CKPT_OD(el.get_uint64().get(u), "version", "an array of two non-negative integers");
      if (n == 0) ver.major = u;
      if (n == 1) ver.minor = u;
      ++n;
    }
    if (n != 2) return fail(sink.corrupt("version: expected an array [major, minor]"));
    if (ver.major != version_major) {
      return fail(sink.make(errc::unsupported_version,
                            "format version " + std::to_string(ver.major) + "." +
                                std::to_string(ver.minor) +
                                (ver.major > version_major ? " is newer than this reader ("
                                                           : " is older than this reader (") +
                                std::to_string(version_major) + ".x)"));
    }
    doc.rewind();
    return true;
  }
  return fail(sink.corrupt("missing key \"version\""));
}

result<index> index_parser::run(od::document& doc) {
  json::version_t& ver = ver_;
  if (!read_version(doc, ver)) return std::move(err_);
  ix_.read_major = ver.major;
  ix_.read_minor = ver.minor;

  constexpr unsigned k_format = 1, k_version = 2, k_files = 4, k_tree = 8, k_leaves = 16;
  unsigned seen = 0;
  auto walk = [&]() -> bool {
    od::object root;
    CKPT_OD(doc.get_object().get(root), "root", "an object");
    for (auto fr : root) {
      CKPT_OD_FIELD(fr, f, key, "root");
      od::value& v = f.value();
      const unsigned bit = key == "format"    ? k_format
                           : key == "version" ? k_version
                           : key == "files"   ? k_files
                           : key == "tree"    ? k_tree
                           : key == "leaves"  ? k_leaves
                                              : 0;
      if (bit == 0) {
        if (!unknown_key(key, v)) return false;
        continue;
      }
      if (seen & bit) return fail(sink.corrupt("duplicate key " + shown(key)));
      seen |= bit;
      bool ok = true;
      switch (bit) {
        case k_format: {
          std::string_view s;
          CKPT_OD(v.get_string().get(s), "format", "a string");
          if (s != "ckpt-index") {
            return fail(sink.corrupt("format is " + shown(s) + ", expected \"ckpt-index\""));
          }
          break;
        }
        case k_version:  // read by read_version
          ok = skip(v, 1, "version");
          break;
        case k_files:
          ok = parse_files(v);
          break;
        case k_tree:
          ok = parse_node(v, 1, {});
          break;
        case k_leaves:
          ok = parse_leaves(v);
          break;
      }
      if (!ok) return false;
    }
    return true;
  };
  if (!walk()) return std::move(err_);
  if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS) {
    return sink.corrupt("trailing content after the root object");
  }
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
  CKPT_TRY(detail::check_extents(ix_, total_chunks_));
  if (tree_leaves_ != ix_.leaves.size()) {
    return sink.corrupt("tree references " + std::to_string(tree_leaves_) +
                        " leaves but \"leaves\" holds " + std::to_string(ix_.leaves.size()));
  }
  CKPT_TRY(detail::check_tree(ix_));
  return std::move(ix_);
}

bool index_parser::parse_files(od::value& v) {
  od::array a;
  CKPT_OD(v.get_array().get(a), "files", "an array");
  for (auto el : a) {
    auto where = [&] { return "files[" + std::to_string(ix_.files.size()) + "]"; };
    if (ix_.files.size() >= lim_.max_files) {
      return fail(sink.limit(detail::too_many(lim_.max_files, "files")));
    }
    od::object o;
    CKPT_OD(el.get_object().get(o), where(), "an object");
    file_entry fe;
    bool has_name = false, has_size = false, has_origin = false;
    for (auto fr : o) {
      CKPT_OD_FIELD(fr, f, key, where());
      if (is(key, "name")) {
        if (has_name) return fail(sink.corrupt(where() + ": duplicate key \"name\""));
        has_name = true;
        std::string_view s;
        CKPT_OD(f.value().get_string().get(s), where() + ".name", "a string");
        if (!plain_file_name(s)) {
          return fail(sink.corrupt(where() + ": file name " + shown(s) +
                                   " is not a plain file name (no '/', '..', '.', NUL or empty)"));
        }
        fe.name = std::string(s);
      } else if (is(key, "size")) {
        if (has_size) return fail(sink.corrupt(where() + ": duplicate key \"size\""));
        has_size = true;
        CKPT_OD(f.value().get_uint64().get(fe.size), where() + ".size", non_negative_integer);
      } else if (is(key, "origin")) {
        if (has_origin) return fail(sink.corrupt(where() + ": duplicate key \"origin\""));
        has_origin = true;
        std::string_view s;
        CKPT_OD(f.value().get_string().get(s), where() + ".origin", "a string");
        if (!plain_file_name(s)) {
          return fail(
              sink.corrupt(where() + ": origin " + shown(s) + " is not a plain checkpoint name"));
        }
        fe.origin = std::string(s);
      } else if (!unknown_key(key, f.value())) {
        return false;
      }
    }
    if (!has_name) return fail(sink.corrupt(where() + ": missing key \"name\""));
    if (!has_size) return fail(sink.corrupt(where() + ": missing key \"size\""));
    if (fe.size > lim_.max_file_bytes) {
      return fail(sink.limit(where() + ": file " + shown(fe.name) + " claims " +
                             std::to_string(fe.size) + " bytes, more than the cap of " +
                             std::to_string(lim_.max_file_bytes)));
    }
    ix_.files.push_back(std::move(fe));
  }
  return true;
}

bool index_parser::parse_node(od::value& v, std::uint32_t depth, std::string_view key) {
  if (depth > max_depth_) {
    return fail(sink.limit(detail::too_deep(max_depth_)));
  }
  od::json_type type;
  CKPT_OD(v.type().get(type), "tree", {});
  if (type == od::json_type::null) {
    bool null = false;
    CKPT_OD(v.is_null().get(null), "tree", {});
    if (!null) return fail(sink.json(simdjson::N_ATOM_ERROR, "tree", {}));
    if (!count_inner_node()) return false;
    add_node(tree::kind::none, key);
    return true;
  }
  if (type != od::json_type::object) {
    return fail(
        sink.corrupt("tree: a node must be null or an object with one key leaf, dict or list"));
  }
  od::object o;
  CKPT_OD(v.get_object().get(o), "tree", {});
  bool first = true;
  for (auto fr : o) {
    if (!first) return fail(sink.corrupt("tree: a node object must have exactly one key"));
    first = false;
    CKPT_OD_FIELD(fr, f, kind, "tree");
    if (is(kind, "leaf")) {
      std::uint64_t i = 0;
      CKPT_OD(f.value().get_uint64().get(i), "tree leaf", non_negative_integer);
      if (i != tree_leaves_) {
        return fail(sink.corrupt(
            "tree: leaf " + std::to_string(i) +
            (i < tree_leaves_ ? " referenced twice or out of order" : " referenced out of order") +
            " (expected leaf " + std::to_string(tree_leaves_) + " next)"));
      }
      if (++tree_leaves_ > lim_.max_leaves) {
        return fail(sink.limit("tree: " + detail::too_many(lim_.max_leaves, "leaves")));
      }
      add_node(tree::kind::leaf, key);
      continue;
    }
    if (!is(kind, "dict") && !is(kind, "list")) {
      return fail(sink.corrupt("tree: unknown node kind " + shown(kind) +
                               " (expected leaf, dict or list)"));
    }
    const bool dict = is(kind, "dict");
    od::array a;
    CKPT_OD(f.value().get_array().get(a), dict ? "tree dict" : "tree list", "an array");
    if (!count_inner_node()) return false;
    const std::size_t self = ix_.nodes.size();
    add_node(dict ? tree::kind::dict : tree::kind::list, key);
    std::uint32_t children = 0;
    for (auto el : a) {
      if (children == std::numeric_limits<std::uint32_t>::max()) {
        return fail(sink.limit("tree: too many children in one node"));
      }
      ++children;
      od::value c;
      CKPT_OD(std::move(el).get(c), "tree", {});
      if (!(dict ? parse_dict_item(c, depth) : parse_node(c, depth + 1, {}))) return false;
    }
    ix_.nodes[self].children = children;
  }
  if (first) return fail(sink.corrupt("tree: a node object must have exactly one key"));
  return true;
}

bool index_parser::parse_dict_item(od::value& item, std::uint32_t depth) {
  od::array pair;
  CKPT_OD(item.get_array().get(pair), "tree dict item", "an array [key, node]");
  std::size_t n = 0;
  std::string_view k;
  for (auto el : pair) {
    od::value x;
    CKPT_OD(std::move(el).get(x), "tree dict item", {});
    if (n == 0) {
      CKPT_OD(x.get_string().get(k), "tree dict key", "a string");
      if (k.size() > lim_.max_key_bytes) {
        return fail(sink.limit(detail::key_too_long(k, lim_.max_key_bytes)));
      }
    } else if (n == 1) {
      if (!parse_node(x, depth + 1, k)) return false;
    } else {
      return fail(
          sink.corrupt("tree: dict item for key " + shown(k) + " has more than two elements"));
    }
    ++n;
  }
  if (n < 2) return fail(sink.corrupt("tree: a dict item must be [key, node]"));
  return true;
}

bool index_parser::parse_leaves(od::value& v) {
  od::array a;
  CKPT_OD(v.get_array().get(a), "leaves", "an array");
  // When the tree came first (as writers emit it), its leaf count is the expected length.
  ix_.leaves.reserve(std::min<std::uint64_t>(tree_leaves_, lim_.max_leaves));
  for (auto el : a) {
    const std::size_t li = ix_.leaves.size();
    if (li >= lim_.max_leaves) {
      return fail(sink.limit(detail::too_many(lim_.max_leaves, "leaves")));
    }
    od::object o;
    CKPT_OD(el.get_object().get(o), "leaves[" + std::to_string(li) + "]", "an object");
    ix_.leaves.emplace_back();
    if (!parse_leaf(o, li)) return false;
  }
  return true;
}

bool index_parser::parse_leaf(od::object& o, std::size_t li) {
  leaf_entry& le = ix_.leaves.back();
  constexpr unsigned k_path = 1, k_dtype = 2, k_shape = 4, k_chunks = 8, k_hashes = 16;
  unsigned seen = 0;
  std::uint64_t raw_sum = 0;
  thread_local std::vector<raw_hash> hashes;
  hashes.clear();
  for (auto fr : o) {
    CKPT_OD_FIELD(fr, f, key, leaf_name(li));
    od::value& v = f.value();
    const unsigned bit = is(key, "path")     ? k_path
                         : is(key, "dtype")  ? k_dtype
                         : is(key, "shape")  ? k_shape
                         : is(key, "chunks") ? k_chunks
                         : is(key, "hashes") ? k_hashes
                                             : 0;
    if (bit == 0) {
      if (!unknown_key(key, v)) return false;
      continue;
    }
    if (seen & bit) return fail(sink.corrupt(leaf_name(li) + ": duplicate key " + shown(key)));
    seen |= bit;
    switch (bit) {
      case k_path: {
        std::string_view s;
        CKPT_OD(v.get_string().get(s), leaf_name(li) + ".path", "a string");
        le.path.assign(s);
        break;
      }
      case k_dtype: {
        std::string_view s;
        CKPT_OD(v.get_string().get(s), leaf_name(li) + ".dtype", "a string");
        if (!fast_parse_dtype(s, le.dtype)) {
          auto t = parse_dtype(s);
          if (!t) return fail(sink.corrupt(leaf_name(li) + ": " + t.error().message()));
          le.dtype = t.value();
        }
        break;
      }
      case k_shape:
        if (!parse_shape(v, li, le)) return false;
        break;
      case k_chunks: {
        od::array ca;
        CKPT_OD(v.get_array().get(ca), leaf_name(li) + ".chunks", "an array");
        for (auto el : ca) {
          if (++total_chunks_ > lim_.max_chunks) {
            return fail(sink.limit(detail::too_many(lim_.max_chunks, "chunks")));
          }
          od::value c;
          CKPT_OD(std::move(el).get(c), leaf_name(li) + ".chunks", {});
          if (!parse_chunk(c, li, le)) return false;
          const std::uint64_t raw = le.chunks.back().raw_size;
          if (raw_sum > std::numeric_limits<std::uint64_t>::max() - raw) {
            return fail(sink.corrupt(leaf_name(li) + ": chunk sizes overflow"));
          }
          raw_sum += raw;
        }
        break;
      }
      case k_hashes: {
        od::array ha;
        CKPT_OD(v.get_array().get(ha), leaf_name(li) + ".hashes", "an array");
        for (auto el : ha) {
          if (hashes.size() >= lim_.max_chunks) {
            return fail(sink.limit(detail::too_many(lim_.max_chunks, "hashes")));
          }
          if ((seen & k_chunks) && hashes.size() >= le.chunks.size()) {
            return fail(sink.corrupt(leaf_name(li) + ": more hashes than its " +
                                     std::to_string(le.chunks.size()) + " chunks"));
          }
          std::string_view hx;
          CKPT_OD(el.get_string().get(hx), leaf_name(li) + ".hashes", "hash strings");
          if (!try_parse_hash128_hex(hx, hashes.emplace_back())) {
            return fail(sink.corrupt(leaf_name(li) + ": hash " + std::to_string(hashes.size() - 1) +
                                     " " + shown(hx) + " is not 32 hex digits"));
          }
        }
        break;
      }
    }
  }
  if (seen & k_hashes) {
    if (hashes.size() != le.chunks.size()) {
      return fail(sink.corrupt(leaf_name(li) + ": " + std::to_string(hashes.size()) +
                               " hashes for " + std::to_string(le.chunks.size()) + " chunks"));
    }
    for (std::size_t c = 0; c < hashes.size(); ++c) {
      le.chunks[c].hashed = true;
      le.chunks[c].hash = hashes[c];
    }
  }
  if (!(seen & k_path)) return fail(sink.corrupt(leaf_name(li) + ": missing key \"path\""));
  if (!(seen & k_dtype)) return fail(sink.corrupt(leaf_name(li) + ": missing key \"dtype\""));
  if (!(seen & k_shape)) return fail(sink.corrupt(leaf_name(li) + ": missing key \"shape\""));
  if (!(seen & k_chunks)) return fail(sink.corrupt(leaf_name(li) + ": missing key \"chunks\""));
  if (!fast_byte_size(le.dtype, le.shape, le.num_bytes)) {
    auto bytes = byte_size(le.dtype, le.shape);
    if (!bytes) return fail(sink.corrupt(leaf_name(li) + ": " + bytes.error().message()));
    le.num_bytes = bytes.value();
  }
  if (raw_sum != le.num_bytes) {
    return fail(sink.corrupt(leaf_name(li) + ": chunks hold " + std::to_string(raw_sum) +
                             " raw bytes, expected " + std::to_string(le.num_bytes) + " for " +
                             std::string(dtype_name(le.dtype)) + shape_to_string(le.shape)));
  }
  for (std::size_t c = 0; c < le.chunks.size(); ++c) {
    if (le.chunks[c].runs.empty()) continue;
    if (auto r = check_runs(le.chunks[c].runs, le.chunks[c].raw_size, dtype_size(le.dtype)); !r) {
      return fail(sink.corrupt(leaf_name(li) + ": chunk " + std::to_string(c) + ": " +
                               r.error().message()));
    }
  }
  return true;
}

bool index_parser::parse_shape(od::value& v, std::size_t li, leaf_entry& le) {
  od::array sa;
  CKPT_OD(v.get_array().get(sa), leaf_name(li) + ".shape", "an array of extents");
  // Extents gather in `small` first, so a shape costs one allocation.
  std::int64_t small[8];
  std::size_t rank = 0;
  for (auto el : sa) {
    if (rank >= lim_.max_rank) {
      return fail(sink.limit(detail::rank_too_high(leaf_name(li), lim_.max_rank)));
    }
    std::int64_t x;
    CKPT_OD(el.get_int64().get(x), leaf_name(li) + ".shape", "integer extents");
    if (x < 0) {
      return fail(
          sink.corrupt(leaf_name(li) + ": negative extent " + std::to_string(x) + " in shape"));
    }
    if (rank == std::size(small)) le.shape.assign(small, small + rank);
    if (rank >= std::size(small)) {
      le.shape.push_back(x);
    } else {
      small[rank] = x;
    }
    ++rank;
  }
  if (rank <= std::size(small)) le.shape.assign(small, small + rank);
  return true;
}

bool index_parser::parse_chunk(od::value& v, std::size_t li, leaf_entry& le) {
  auto where = [&] { return leaf_name(li) + ": chunk " + std::to_string(le.chunks.size()); };
  constexpr std::string_view layout = "[file, offset, stored, raw, codec, xxh3(, runs)]";
  od::array a;
  CKPT_OD(v.get_array().get(a), where(), layout);
  std::uint64_t u[4] = {};
  std::string_view codec_s, hex_s;
  chunk_entry c;
  std::size_t n = 0;
  for (auto x : a) {
    if (n < 4) {
      CKPT_OD(x.get_uint64().get(u[n]), where(),
              "[file, offset, stored, raw, codec, xxh3] with non-negative integers");
    } else if (n == 4) {
      CKPT_OD(x.get_string().get(codec_s), where(), "a codec name string");
    } else if (n == 5) {
      CKPT_OD(x.get_string().get(hex_s), where(), "a checksum string");
    } else if (n == 6) {
      if (ver_.minor < 2) {
        return fail(sink.corrupt(where() + ": fill runs in a version " +
                                 std::to_string(ver_.major) + "." + std::to_string(ver_.minor) +
                                 " index (they are 1.2)"));
      }
      od::value rv;
      CKPT_OD(std::move(x).get(rv), where(), "a list of runs");
      if (!parse_runs(rv, where, c.runs)) return false;
    } else {
      return fail(sink.corrupt(where() + ": more than 7 elements"));
    }
    ++n;
  }
  if (n != 6 && n != 7) {
    return fail(sink.corrupt(where() + ": expected " + std::string(layout) + ", got " +
                             std::to_string(n) + " elements"));
  }
  if (u[0] > std::numeric_limits<std::uint32_t>::max()) {
    return fail(sink.corrupt(where() + ": file index " + std::to_string(u[0]) + " out of range"));
  }
  c.file = static_cast<std::uint32_t>(u[0]);
  c.offset = u[1];
  c.stored_size = u[2];
  c.raw_size = u[3];
  if (!try_parse_codec(codec_s, c.codec)) {
    auto cd = parse_codec(codec_s);
    if (!cd) return fail(sink.corrupt(where() + ": " + cd.error().message()));
    c.codec = cd.value();
  }
  if (!try_parse_checksum_hex(hex_s, c.xxh3)) {
    auto h = parse_checksum_hex(hex_s);
    if (!h) return fail(sink.corrupt(where() + ": " + h.error().message()));
    c.xxh3 = h.value();
  }
  if (c.raw_size == 0) return fail(sink.corrupt(where() + ": empty chunk (raw 0)"));
  // The runs' order and bounds now (their element size once the leaf's dtype is known).
  if (auto r = check_runs(c.runs, c.raw_size, 0); !r) {
    return fail(sink.corrupt(where() + ": " + r.error().message()));
  }
  const std::uint64_t rest = c.raw_size - run_bytes(c.runs);
  if (rest == 0) {
    if (c.stored_size != 0 || c.codec != codec::raw || c.offset != 0) {
      return fail(sink.corrupt(where() + ": runs cover the chunk, so it must be [file, 0, 0, " +
                               std::to_string(c.raw_size) + ", \"raw\", ...]"));
    }
  } else if (c.stored_size == 0) {
    return fail(
        sink.corrupt(where() + ": empty chunk (stored 0, raw " + std::to_string(c.raw_size) + ")"));
  }
  if (c.codec == codec::raw && c.stored_size != rest) {
    return fail(sink.corrupt(where() + ": raw chunk stores " + std::to_string(c.stored_size) +
                             " bytes for " + std::to_string(rest) + " raw bytes"));
  }
  if (c.codec != codec::raw && (rest > max_lz4_chunk || c.stored_size > encode_bound(rest))) {
    return fail(sink.corrupt(where() + ": " + std::string(codec_name(c.codec)) + " chunk of " +
                             std::to_string(c.stored_size) + " stored bytes for " +
                             std::to_string(rest) + " raw bytes is impossible"));
  }
  if (c.offset > std::numeric_limits<std::uint64_t>::max() - c.stored_size) {
    return fail(sink.corrupt(where() + ": offset + size overflows"));
  }
  le.chunks.push_back(std::move(c));
  return true;
}

template <class Where>
bool index_parser::parse_runs(od::value& v, const Where& where, std::vector<fill_run>& runs) {
  constexpr std::string_view layout = "runs [[start, length(, \"fill hex\")], ...]";
  od::array a;
  CKPT_OD(v.get_array().get(a), where(), layout);
  for (auto el : a) {
    od::array ra;
    CKPT_OD(el.get_array().get(ra), where(), layout);
    fill_run r;
    std::size_t n = 0;
    for (auto x : ra) {
      if (n < 2) {
        CKPT_OD(x.get_uint64().get(n == 0 ? r.start : r.length), where(), layout);
      } else if (n == 2) {
        std::string_view hex;
        CKPT_OD(x.get_string().get(hex), where(), layout);
        const std::size_t w = hex.size() / 2;
        if (hex.size() % 2 != 0 || (w != 1 && w != 2 && w != 4 && w != 8)) {
          return fail(sink.corrupt(where() + ": run fill " + shown(hex) +
                                   " is not 1, 2, 4 or 8 bytes of hex"));
        }
        std::byte bytes[8] = {};
        for (std::size_t i = 0; i < w; ++i) {
          const int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
          if (hi < 0 || lo < 0) {
            return fail(sink.corrupt(where() + ": run fill " + shown(hex) + " is not hex"));
          }
          bytes[i] = static_cast<std::byte>(hi * 16 + lo);
        }
        std::memcpy(&r.fill, bytes, 8);
        r.width = static_cast<std::uint8_t>(w);
      } else {
        return fail(sink.corrupt(where() + ": a run has more than 3 elements"));
      }
      ++n;
    }
    if (n < 2) return fail(sink.corrupt(where() + ": expected " + std::string(layout)));
    runs.push_back(r);
  }
  if (runs.empty()) return fail(sink.corrupt(where() + ": an empty list of runs"));
  return true;
}

#undef CKPT_OD_FIELD
#undef CKPT_OD

}  // namespace

result<index> parse_index(std::string_view text, const parse_limits& limits) {
  if (text.size() > limits.max_index_bytes) {
    return fail(errc::limit_exceeded, "index.json: " + std::to_string(text.size()) +
                                          " bytes, more than the cap of " +
                                          std::to_string(limits.max_index_bytes));
  }
  if (text.empty()) return fail(errc::corrupt, "index.json: empty");
  // (UTF-8 is checked by simdjson's first stage: "index.json: not valid UTF-8".)
  const json::error_sink sink{"index.json"};
  // simdjson's On-Demand parser, reused per thread for documents below 16 MiB (its buffers
  // grow to the largest seen); a larger one gets a parser of its own, so the memory goes back.
  constexpr std::size_t reuse_below = 16u << 20;
  thread_local od::parser cached;
  od::parser local;
  od::parser& parser = text.size() < reuse_below ? cached : local;
  od::document doc;
  if (auto e = parser.iterate(text.data(), text.size(), text.size() + parse_padding).get(doc)) {
    if (e == simdjson::UTF8_ERROR) return sink.corrupt("not valid UTF-8");
    if (e == simdjson::MEMALLOC) return sink.limit("cannot allocate the JSON parser");
    return sink.corrupt(std::string("malformed JSON (") + simdjson::error_message(e) + ")");
  }
  index_parser p(limits, text.size());
  return p.run(doc);
}

}  // namespace ckpt::format
