#include "format/index.hpp"

#include "format/json_reader.hpp"

#include <simdjson.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <limits>
#include <memory>
#include <system_error>
#include <thread>

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

/// Writes the subtree at ix.nodes[pos] (and moves pos past it).
void append_node(std::string& out, const index& ix, std::size_t& pos, std::uint64_t& next_leaf) {
  const tree_node& n = ix.nodes[pos++];
  switch (n.kind) {
    case tree::kind::none:
      out += "null";
      return;
    case tree::kind::leaf:
      out += "{\"leaf\":";
      append_u64(out, next_leaf++);
      out += '}';
      return;
    case tree::kind::dict:
    case tree::kind::list: {
      const bool dict = n.kind == tree::kind::dict;
      out += dict ? "{\"dict\":[" : "{\"list\":[";
      for (std::uint32_t i = 0; i < n.children; ++i) {
        if (i) out += ',';
        if (dict) {
          out += '[';
          append_json_string(out, ix.key(ix.nodes[pos]));
          out += ',';
        }
        append_node(out, ix, pos, next_leaf);
        if (dict) out += ']';
      }
      out += "]}";
      return;
    }
  }
}

void add_nodes(index& ix, const tree& t, std::string_view key) {
  tree_node n;
  n.kind = t.type();
  n.key_offset = ix.keys.size();
  n.key_size = static_cast<std::uint32_t>(key.size());
  ix.keys += key;
  if (t.is_dict() || t.is_list()) n.children = static_cast<std::uint32_t>(t.size());
  ix.nodes.push_back(n);
  if (t.is_dict()) {
    for (const auto& [k, v] : t.items())
      add_nodes(ix, v, k);
  } else if (t.is_list()) {
    for (const auto& v : t.elements())
      add_nodes(ix, v, {});
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

/// A major version other than ours is errc::unsupported_version.
result<version_t> check_major(const parse_error_sink& sink, version_t ver) {
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
  CKPT_TRY(check_major(sink, ver));
  doc.rewind();
  return ver;
}

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

/// True when the document has been read to its end (nothing but whitespace left).
bool at_end(od::document& doc) {
  return doc.current_location().error() == simdjson::OUT_OF_BOUNDS;
}

/// `key == lit` with the literal's length known at compile time (so no call to memcmp).
template <std::size_t N>
bool is(std::string_view key, const char (&lit)[N]) noexcept {
  return key.size() == N - 1 && std::memcmp(key.data(), lit, N - 1) == 0;
}

void append_escaped_key(std::string& path, std::string_view key) {
  if (key.find_first_of("~/") == std::string_view::npos) {
    path += key;
    return;
  }
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
// Index parser: one pass of json::reader over the text, checks as it goes, then the cross
// checks (files, chunk extents, tree paths) and the tree built from a flat node list.
// ---------------------------------------------------------------------------------------------

/// Reads with json::reader call `expr`; on failure returns json_fail(where, expected) (`where`
/// is only built then).
#define CKPT_READ(expr, where, expected)            \
  do {                                              \
    if (!(expr)) return json_fail(where, expected); \
  } while (0)

/// What the index walkers share: the reader, the caps and how a failure is kept.
class walker {
 protected:
  walker(json::reader& r, const parse_limits& limits)
      : r_(r), lim_(limits), max_depth_(std::min<std::uint32_t>(limits.max_depth, 1024)) {}

  // The walks return false with the error kept in err_.
  bool fail(error e) {
    err_ = std::move(e);
    return false;
  }
  /// The reader's fault while reading `where`, which asked for `expected`.
  bool json_fail(std::string_view where, std::string_view expected);
  bool skip_unknown(std::string_view key) {
    if (unknown_.empty()) unknown_ = std::string(key.substr(0, 64));
    return r_.skip(max_depth_) || json_fail(unknown_, {});
  }

  json::reader& r_;
  const parse_limits& lim_;
  const std::uint32_t max_depth_;
  parse_error_sink sink{"index.json"};
  error err_;
  std::string unknown_;  ///< the first key not in this format version
};

/// Reads the objects of the "leaves" array into `leaves`.
class leaf_walker : walker {
 public:
  leaf_walker(json::reader& r, const parse_limits& limits, std::vector<leaf_entry>& leaves)
      : walker(r, limits), leaves_(leaves) {}

  /// One element, the reader at its start.
  bool leaf() {
    const std::size_t li = leaves_.size();
    if (li >= lim_.max_leaves) {
      return fail(sink.limit("more than " + std::to_string(lim_.max_leaves) + " leaves"));
    }
    CKPT_READ(r_.begin_object(), "leaves[" + std::to_string(li) + "]", "an object");
    leaves_.emplace_back();
    return parse_leaf(li);
  }
  std::uint64_t chunks() const noexcept { return total_chunks_; }
  void add_chunks(std::uint64_t n) noexcept { total_chunks_ += n; }
  error& err() noexcept { return err_; }
  std::string& unknown() noexcept { return unknown_; }

 private:
  bool parse_leaf(std::size_t li);
  bool parse_chunk(std::size_t li, leaf_entry& le);
  std::string leaf_name(std::size_t i) const;

  std::vector<leaf_entry>& leaves_;
  std::uint64_t total_chunks_ = 0;
};

/// Reads the second half of a large "leaves" array on another thread, from a guessed element
/// boundary (the text `},{"path":` past the middle of the document). The main walk takes the
/// result only when it reaches that exact offset itself as the start of an element of "leaves":
/// then the helper read exactly what the main walk would have read. Otherwise (the text was in
/// another array of objects, say a newer version's unknown key; it cannot be inside a string,
/// where '"' is escaped) or when the helper failed, the main walk reads on by itself, so
/// results and errors are those of a sequential parse.
class leaves_helper {
 public:
  /// Null when the index is small, the machine has one core or no thread can be had.
  static std::unique_ptr<leaves_helper> start(std::string_view json, const parse_limits& limits);
  ~leaves_helper() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  std::size_t offset() const noexcept { return begin_; }
  /// Whether to wait for the helper once the main walk reached offset(): it has read at least
  /// half of its part (when its core was busy with something else, the main walk reads on
  /// alone rather than waiting for a helper that is far behind).
  bool worth_waiting() const noexcept {
    return done_.load(std::memory_order_acquire) ||
           pos_.load(std::memory_order_relaxed) - begin_ >= (size_ - begin_) / 2;
  }
  /// Waits for the helper; true when it read every element from offset() to the array's end.
  bool finish() {
    if (thread_.joinable()) thread_.join();
    return ok_;
  }
  std::vector<leaf_entry>& leaves() noexcept { return leaves_; }
  std::size_t end_offset() const noexcept { return end_; }
  std::uint64_t chunks() const noexcept { return walker_.chunks(); }
  std::string& unknown() noexcept { return walker_.unknown(); }

 private:
  leaves_helper(std::string_view json, const parse_limits& limits, std::size_t begin)
      : reader_(json.data(), json.size()),
        walker_(reader_, limits, leaves_),
        begin_(begin),
        size_(json.size()),
        pos_(begin) {}
  void run() noexcept;

  json::reader reader_;
  std::vector<leaf_entry> leaves_;
  leaf_walker walker_;
  std::size_t begin_;
  std::size_t size_;  // of the text
  std::size_t end_ = 0;
  bool ok_ = false;
  std::atomic<std::size_t> pos_;  // how far the helper has read
  std::atomic<bool> done_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::unique_ptr<leaves_helper> leaves_helper::start(std::string_view json,
                                                    const parse_limits& limits) {
  constexpr std::size_t min_bytes = 1u << 20;
  if (!limits.parallel || json.size() < min_bytes || std::thread::hardware_concurrency() < 2) {
    return nullptr;
  }
  constexpr std::string_view boundary = R"(},{"path":)";
  const std::size_t at = json.find(boundary, json.size() / 2);
  if (at == std::string_view::npos) return nullptr;
  std::unique_ptr<leaves_helper> h(new leaves_helper(json, limits, at + 2));
  // (About 100 bytes of JSON per leaf at least: ckpt writes ~140.)
  h->leaves_.reserve(std::min<std::uint64_t>((json.size() - at) / 100, limits.max_leaves));
  try {
    h->thread_ = std::thread([p = h.get()] { p->run(); });
  } catch (const std::system_error&) {
    return nullptr;  // the main walk reads it all
  }
  return h;
}

void leaves_helper::run() noexcept {
  try {
    reader_.seek(begin_);
    for (;;) {
      if (stop_.load(std::memory_order_relaxed) || !walker_.leaf()) break;
      pos_.store(reader_.offset(), std::memory_order_relaxed);
      bool first = false, more;
      if (!reader_.next_element(first, more)) break;
      if (!more) {
        end_ = reader_.offset();
        ok_ = true;
        break;
      }
    }
  } catch (...) {
    // (Out of memory: the main walk will read these leaves itself and report it.)
  }
  done_.store(true, std::memory_order_release);
}

class index_parser : walker {
 public:
  index_parser(json::reader& r, std::string_view json, const parse_limits& limits)
      : walker(r, limits), leaves_(r, limits, ix_.leaves) {
    // A tree node takes at least 4 bytes of JSON ("null"); most take far more.
    ix_.nodes.reserve(std::min<std::size_t>(json.size() / 64, 1u << 20));
    helper_ = leaves_helper::start(json, limits);
  }

  result<index> run();

 private:
  /// Appends a node; `key` is its key under a dict parent (copied to ix_.keys).
  void add_node(tree::kind kind, std::string_view key) {
    tree_node n;
    n.kind = kind;
    n.key_offset = ix_.keys.size();
    n.key_size = static_cast<std::uint32_t>(key.size());  // (capped by max_key_bytes)
    ix_.keys += key;
    ix_.nodes.push_back(n);
  }

  bool read_version(version_t& ver);
  bool parse_files();
  bool parse_node(std::uint32_t depth, std::string_view key);
  bool parse_leaves();
  /// 1: the helper's leaves taken, the array read to its end; 0: not usable; -1: error.
  int take_helper();
  result<void> check_files();
  result<void> check_chunks();
  /// Dict keys unique; each leaf's path is the one its place in the tree implies.
  bool check_tree(std::size_t& pos, std::size_t& leaf, std::string& path);
  /// A key that is in `keys` twice, or null.
  const std::string_view* find_duplicate(std::span<const std::string_view> keys);
  std::string leaf_name(std::size_t i) const;
  /// None, dict and list nodes are capped like leaves, so memory stays bounded.
  bool count_inner_node() {
    if (++inner_nodes_ > lim_.max_tree_nodes) {
      return fail(sink.limit("tree: more than " + std::to_string(lim_.max_tree_nodes) +
                             " None/dict/list nodes"));
    }
    return true;
  }

  index ix_;
  leaf_walker leaves_;
  std::unique_ptr<leaves_helper> helper_;
  std::vector<std::string_view> keys_;  // check_tree's scratch
  std::vector<std::uint32_t> slots_;    // check_tree's scratch
  std::uint64_t tree_leaves_ = 0;
  std::uint64_t inner_nodes_ = 0;
};

bool walker::json_fail(std::string_view where, std::string_view expected) {
  switch (r_.last_fault()) {
    case json::fault::type:
    case json::fault::out_of_range:
      if (!expected.empty())
        return fail(sink.corrupt(std::string(where) + ": expected " + std::string(expected)));
      break;
    case json::fault::too_deep:
      return fail(sink.limit(std::string(where) + ": JSON nesting too deep"));
    default:
      break;
  }
  const std::string_view wanted =
      r_.last_fault() == json::fault::syntax ? r_.expected() : std::string_view("another value");
  return fail(sink.corrupt(std::string(where) + ": malformed JSON at byte " +
                           std::to_string(r_.offset()) + " (expected " + std::string(wanted) +
                           ")"));
}

std::string index_parser::leaf_name(std::size_t i) const {
  std::string s = "leaf " + std::to_string(i);
  if (i < ix_.leaves.size() && !ix_.leaves[i].path.empty()) s += " " + shown(ix_.leaves[i].path);
  return s;
}

std::string leaf_walker::leaf_name(std::size_t i) const {
  std::string s = "leaf " + std::to_string(i);
  if (i < leaves_.size() && !leaves_[i].path.empty()) s += " " + shown(leaves_[i].path);
  return s;
}

/// Finds "version" in the root object (skipping what comes before it: ckpt writes it second),
/// so that a newer major version is reported as such rather than as whatever schema difference
/// comes first.
bool index_parser::read_version(version_t& ver) {
  CKPT_READ(r_.begin_object(), "root", "an object");
  bool first = true, more;
  std::string_view key;
  for (;;) {
    CKPT_READ(r_.next_key(first, more, key), "root", {});
    if (!more) return fail(sink.corrupt("missing key \"version\""));
    if (key != "version") {
      CKPT_READ(r_.skip(max_depth_), key, {});
      continue;
    }
    constexpr std::string_view shape = "an array [major, minor]";
    CKPT_READ(r_.begin_array(), "version", shape);
    bool vfirst = true, vmore;
    std::size_t n = 0;
    for (;;) {
      CKPT_READ(r_.next_element(vfirst, vmore), "version", {});
      if (!vmore) break;
      std::uint64_t u = 0;
      CKPT_READ(r_.u64(u), "version", "an array of two non-negative integers");
      if (n == 0) ver.major = u;
      if (n == 1) ver.minor = u;
      ++n;
    }
    if (n != 2) return fail(sink.corrupt("version: expected an array [major, minor]"));
    auto checked = check_major(sink, ver);
    if (!checked) return fail(std::move(checked).error());
    r_.rewind();
    return true;
  }
}

result<index> index_parser::run() {
  version_t ver;
  if (!read_version(ver)) return std::move(err_);
  if (!r_.begin_object()) {
    json_fail("root", "an object");
    return std::move(err_);
  }

  constexpr unsigned k_format = 1, k_version = 2, k_files = 4, k_tree = 8, k_leaves = 16;
  unsigned seen = 0;
  bool first = true, more;
  std::string_view key;
  auto walk = [&]() -> bool {
    for (;;) {
      CKPT_READ(r_.next_key(first, more, key), "root", {});
      if (!more) return true;
      const unsigned bit = key == "format"    ? k_format
                           : key == "version" ? k_version
                           : key == "files"   ? k_files
                           : key == "tree"    ? k_tree
                           : key == "leaves"  ? k_leaves
                                              : 0;
      if (bit == 0) {
        if (!skip_unknown(key)) return false;
        continue;
      }
      if (seen & bit) return fail(sink.corrupt("duplicate key " + shown(key)));
      seen |= bit;
      bool ok = true;
      switch (bit) {
        case k_format: {
          std::string_view s;
          CKPT_READ(r_.string(s), "format", "a string");
          if (s != "ckpt-index") {
            return fail(sink.corrupt("format is " + shown(s) + ", expected \"ckpt-index\""));
          }
          break;
        }
        case k_version:  // checked by read_version
          CKPT_READ(r_.skip(max_depth_), "version", {});
          break;
        case k_files:
          ok = parse_files();
          break;
        case k_tree:
          ok = parse_node(1, {});
          break;
        case k_leaves:
          ok = parse_leaves();
          break;
      }
      if (!ok) return false;
    }
  };
  if (!walk()) return std::move(err_);
  if (!r_.at_end()) return sink.corrupt("trailing content after the root object");
  for (auto [bit, name] : {std::pair{k_format, "format"},
                           {k_version, "version"},
                           {k_files, "files"},
                           {k_tree, "tree"},
                           {k_leaves, "leaves"}}) {
    if (!(seen & bit)) return sink.corrupt(std::string("missing key \"") + name + "\"");
  }
  if (unknown_.empty()) unknown_ = std::move(leaves_.unknown());
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
  std::size_t pos = 0, leaf = 0;
  std::string path;
  if (!check_tree(pos, leaf, path)) return std::move(err_);
  return std::move(ix_);
}

bool index_parser::parse_files() {
  CKPT_READ(r_.begin_array(), "files", "an array");
  bool first = true, more;
  for (;;) {
    CKPT_READ(r_.next_element(first, more), "files", {});
    if (!more) return true;
    auto where = [&] { return "files[" + std::to_string(ix_.files.size()) + "]"; };
    if (ix_.files.size() >= lim_.max_files) {
      return fail(sink.limit("more than " + std::to_string(lim_.max_files) + " files"));
    }
    CKPT_READ(r_.begin_object(), where(), "an object");
    file_entry fe;
    bool has_name = false, has_size = false, ofirst = true, omore;
    std::string_view key;
    for (;;) {
      CKPT_READ(r_.next_key(ofirst, omore, key), where(), {});
      if (!omore) break;
      if (is(key, "name")) {
        if (has_name) return fail(sink.corrupt(where() + ": duplicate key \"name\""));
        has_name = true;
        std::string_view s;
        CKPT_READ(r_.string(s), where() + ".name", "a string");
        if (!plain_file_name(s)) {
          return fail(sink.corrupt(where() + ": file name " + shown(s) +
                                   " is not a plain file name (no '/', '..', '.', NUL or empty)"));
        }
        fe.name = std::string(s);
      } else if (is(key, "size")) {
        if (has_size) return fail(sink.corrupt(where() + ": duplicate key \"size\""));
        has_size = true;
        CKPT_READ(r_.u64(fe.size), where() + ".size", non_negative_integer);
      } else if (!skip_unknown(key)) {
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
}

bool index_parser::parse_node(std::uint32_t depth, std::string_view key) {
  if (depth > max_depth_) {
    return fail(sink.limit("tree: nesting deeper than " + std::to_string(max_depth_) + " levels"));
  }
  const char c = r_.peek();
  if (c == 'n') {
    CKPT_READ(r_.null(), "tree", "null");
    if (!count_inner_node()) return false;
    add_node(tree::kind::none, key);
    return true;
  }
  if (!r_.begin_object()) {
    if (r_.last_fault() != json::fault::type) return json_fail("tree", {});
    return fail(
        sink.corrupt("tree: a node must be null or an object with one key leaf, dict or list"));
  }
  bool first = true, more;
  std::string_view kind;
  CKPT_READ(r_.next_key(first, more, kind), "tree", {});
  if (!more) return fail(sink.corrupt("tree: a node object must have exactly one key"));
  if (is(kind, "leaf")) {
    std::uint64_t i = 0;
    CKPT_READ(r_.u64(i), "tree leaf", non_negative_integer);
    if (i != tree_leaves_) {
      return fail(sink.corrupt(
          "tree: leaf " + std::to_string(i) +
          (i < tree_leaves_ ? " referenced twice or out of order" : " referenced out of order") +
          " (expected leaf " + std::to_string(tree_leaves_) + " next)"));
    }
    if (++tree_leaves_ > lim_.max_leaves) {
      return fail(sink.limit("tree: more than " + std::to_string(lim_.max_leaves) + " leaves"));
    }
    add_node(tree::kind::leaf, key);
  } else if (is(kind, "dict") || is(kind, "list")) {
    const bool dict = is(kind, "dict");
    CKPT_READ(r_.begin_array(), dict ? "tree dict" : "tree list", "an array");
    if (!count_inner_node()) return false;
    const std::size_t self = ix_.nodes.size();
    add_node(dict ? tree::kind::dict : tree::kind::list, key);
    std::uint32_t children = 0;
    bool afirst = true, amore;
    for (;;) {
      CKPT_READ(r_.next_element(afirst, amore), "tree", {});
      if (!amore) break;
      if (children == std::numeric_limits<std::uint32_t>::max()) {
        return fail(sink.limit("tree: too many children in one node"));
      }
      ++children;
      if (!dict) {
        if (!parse_node(depth + 1, {})) return false;
        continue;
      }
      CKPT_READ(r_.begin_array(), "tree dict item", "an array [key, node]");
      bool pfirst = true, pmore;
      std::string_view k;
      CKPT_READ(r_.next_element(pfirst, pmore), "tree dict item", {});
      if (!pmore) return fail(sink.corrupt("tree: a dict item must be [key, node]"));
      CKPT_READ(r_.string(k), "tree dict key", "a string");
      if (k.size() > lim_.max_key_bytes) {
        return fail(sink.limit("tree: dict key " + shown(k) + " is longer than " +
                               std::to_string(lim_.max_key_bytes) + " bytes"));
      }
      CKPT_READ(r_.next_element(pfirst, pmore), "tree dict item", {});
      if (!pmore) return fail(sink.corrupt("tree: a dict item must be [key, node]"));
      if (!parse_node(depth + 1, k)) return false;
      CKPT_READ(r_.next_element(pfirst, pmore), "tree dict item", {});
      if (pmore) {
        return fail(
            sink.corrupt("tree: dict item for key " + shown(k) + " has more than two elements"));
      }
    }
    ix_.nodes[self].children = children;
  } else {
    return fail(
        sink.corrupt("tree: unknown node kind " + shown(kind) + " (expected leaf, dict or list)"));
  }
  CKPT_READ(r_.next_key(first, more, kind), "tree", {});
  if (more) return fail(sink.corrupt("tree: a node object must have exactly one key"));
  return true;
}

bool index_parser::parse_leaves() {
  CKPT_READ(r_.begin_array(), "leaves", "an array");
  // When the tree came first (as writers emit it), its leaf count is the expected length.
  ix_.leaves.reserve(std::min<std::uint64_t>(tree_leaves_, lim_.max_leaves));
  bool first = true, more;
  for (;;) {
    CKPT_READ(r_.next_element(first, more), "leaves", {});
    if (!more) return true;
    if (helper_ && r_.offset() >= helper_->offset()) {
      const int taken = r_.offset() == helper_->offset() ? take_helper() : 0;
      if (taken != 0) return taken > 0;
      helper_.reset();
    }
    if (!leaves_.leaf()) return fail(std::move(leaves_.err()));
  }
}

int index_parser::take_helper() {
  if (!helper_->worth_waiting() || !helper_->finish()) return 0;
  auto& more = helper_->leaves();
  if (more.size() > lim_.max_leaves - ix_.leaves.size()) {
    fail(sink.limit("more than " + std::to_string(lim_.max_leaves) + " leaves"));
    return -1;
  }
  leaves_.add_chunks(helper_->chunks());
  if (leaves_.chunks() > lim_.max_chunks) {
    fail(sink.limit("more than " + std::to_string(lim_.max_chunks) + " chunks"));
    return -1;
  }
  ix_.leaves.insert(ix_.leaves.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  if (leaves_.unknown().empty()) leaves_.unknown() = std::move(helper_->unknown());
  r_.seek(helper_->end_offset());
  helper_.reset();
  return 1;
}

bool leaf_walker::parse_leaf(std::size_t li) {
  leaf_entry& le = leaves_.back();
  constexpr unsigned k_path = 1, k_dtype = 2, k_shape = 4, k_chunks = 8;
  unsigned seen = 0;
  std::uint64_t raw_sum = 0;
  bool first = true, more;
  std::string_view key;
  for (;;) {
    CKPT_READ(r_.next_key(first, more, key), leaf_name(li), {});
    if (!more) break;
    const unsigned bit = is(key, "path")     ? k_path
                         : is(key, "dtype")  ? k_dtype
                         : is(key, "shape")  ? k_shape
                         : is(key, "chunks") ? k_chunks
                                             : 0;
    if (bit == 0) {
      if (!skip_unknown(key)) return false;
      continue;
    }
    if (seen & bit) return fail(sink.corrupt(leaf_name(li) + ": duplicate key " + shown(key)));
    seen |= bit;
    switch (bit) {
      case k_path: {
        std::string_view s;
        CKPT_READ(r_.string(s), leaf_name(li) + ".path", "a string");
        le.path.assign(s);
        break;
      }
      case k_dtype: {
        std::string_view s;
        CKPT_READ(r_.string(s), leaf_name(li) + ".dtype", "a string");
        if (!fast_parse_dtype(s, le.dtype)) {
          auto t = parse_dtype(s);
          if (!t) return fail(sink.corrupt(leaf_name(li) + ": " + t.error().message()));
          le.dtype = t.value();
        }
        break;
      }
      case k_shape: {
        CKPT_READ(r_.begin_array(), leaf_name(li) + ".shape", "an array of extents");
        // Extents gather in `small` first, so a shape costs one allocation.
        std::int64_t small[8];
        std::size_t rank = 0;
        bool sfirst = true, smore;
        for (;;) {
          CKPT_READ(r_.next_element(sfirst, smore), leaf_name(li) + ".shape", {});
          if (!smore) break;
          if (rank >= lim_.max_rank) {
            return fail(sink.limit(leaf_name(li) + ": rank above the cap of " +
                                   std::to_string(lim_.max_rank)));
          }
          std::int64_t x;
          CKPT_READ(r_.i64(x), leaf_name(li) + ".shape", "integer extents");
          if (x < 0) {
            return fail(sink.corrupt(leaf_name(li) + ": negative extent " + std::to_string(x) +
                                     " in shape"));
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
        break;
      }
      case k_chunks: {
        CKPT_READ(r_.begin_array(), leaf_name(li) + ".chunks", "an array");
        bool cfirst = true, cmore;
        for (;;) {
          CKPT_READ(r_.next_element(cfirst, cmore), leaf_name(li) + ".chunks", {});
          if (!cmore) break;
          if (++total_chunks_ > lim_.max_chunks) {
            return fail(sink.limit("more than " + std::to_string(lim_.max_chunks) + " chunks"));
          }
          if (!parse_chunk(li, le)) return false;
          const std::uint64_t raw = le.chunks.back().raw_size;
          if (raw_sum > std::numeric_limits<std::uint64_t>::max() - raw) {
            return fail(sink.corrupt(leaf_name(li) + ": chunk sizes overflow"));
          }
          raw_sum += raw;
        }
        break;
      }
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
  return true;
}

bool leaf_walker::parse_chunk(std::size_t li, leaf_entry& le) {
  auto where = [&] { return leaf_name(li) + ": chunk " + std::to_string(le.chunks.size()); };
  constexpr std::string_view layout = "[file, offset, stored, raw, codec, xxh3]";
  CKPT_READ(r_.begin_array(), where(), layout);
  std::uint64_t u[4] = {};
  std::string_view codec_s, hex_s;
  std::size_t n = 0;
  bool first = true, more;
  for (;;) {
    CKPT_READ(r_.next_element(first, more), where(), {});
    if (!more) break;
    if (n < 4) {
      CKPT_READ(r_.u64(u[n]), where(),
                "[file, offset, stored, raw, codec, xxh3] with non-negative integers");
    } else if (n == 4) {
      CKPT_READ(r_.string(codec_s), where(), "a codec name string");
    } else if (n == 5) {
      CKPT_READ(r_.string(hex_s), where(), "a checksum string");
    } else {
      return fail(sink.corrupt(where() + ": more than 6 elements"));
    }
    ++n;
  }
  if (n != 6) {
    return fail(sink.corrupt(where() + ": expected " + std::string(layout) + ", got " +
                             std::to_string(n) + " elements"));
  }
  chunk_entry c;
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
  if (c.raw_size == 0 || c.stored_size == 0) {
    return fail(sink.corrupt(where() + ": empty chunk (stored " + std::to_string(c.stored_size) +
                             ", raw " + std::to_string(c.raw_size) + ")"));
  }
  if (c.codec == codec::raw && c.stored_size != c.raw_size) {
    return fail(sink.corrupt(where() + ": raw chunk stores " + std::to_string(c.stored_size) +
                             " bytes for " + std::to_string(c.raw_size) + " raw bytes"));
  }
  if (c.codec != codec::raw &&
      (c.raw_size > max_lz4_chunk || c.stored_size > encode_bound(c.raw_size))) {
    return fail(sink.corrupt(where() + ": " + std::string(codec_name(c.codec)) + " chunk of " +
                             std::to_string(c.stored_size) + " stored bytes for " +
                             std::to_string(c.raw_size) + " raw bytes is impossible"));
  }
  if (c.offset > std::numeric_limits<std::uint64_t>::max() - c.stored_size) {
    return fail(sink.corrupt(where() + ": offset + size overflows"));
  }
  le.chunks.push_back(c);
  return true;
}

#undef CKPT_READ

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
  // Bounds, then overlap. Writers emit chunks in increasing offset order per file when they
  // write in leaf order: then a linear scan decides. A real save writes in parallel, so the
  // extents are sorted by (file, offset) (a radix sort) and adjacent ones compared.
  struct extent {
    std::uint64_t begin, end;
    std::uint32_t file;
    std::uint32_t chunk;
    std::size_t leaf;
  };
  std::vector<std::uint64_t> last_end(ix_.files.size(), 0);
  std::vector<extent> ex;
  ex.reserve(leaves_.chunks());
  std::uint64_t offset_bits = 0;
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
      ex.push_back({c.offset, end, c.file, static_cast<std::uint32_t>(ci), li});
      offset_bits |= c.offset;
    }
  }
  if (sorted) return success();
  // LSD radix passes over the 11-bit digits of the offsets that vary, then a stable counting
  // pass by file.
  std::vector<extent> tmp(ex.size());
  std::vector<std::size_t> count;
  auto scatter = [&](auto key, std::size_t buckets) {
    count.assign(buckets + 1, 0);
    for (const extent& e : ex)
      ++count[key(e) + 1];
    for (std::size_t b = 1; b <= buckets; ++b)
      count[b] += count[b - 1];
    for (const extent& e : ex)
      tmp[count[key(e)]++] = e;
    ex.swap(tmp);
  };
  constexpr unsigned digit = 11;
  for (unsigned shift = 0; shift < 64 && (offset_bits >> shift) != 0; shift += digit) {
    scatter(
        [shift](const extent& e) {
          return static_cast<std::size_t>((e.begin >> shift) & ((1u << digit) - 1));
        },
        std::size_t{1} << digit);
  }
  if (ix_.files.size() > 1) {
    scatter([](const extent& e) { return static_cast<std::size_t>(e.file); }, ix_.files.size());
  }
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

const std::string_view* index_parser::find_duplicate(std::span<const std::string_view> keys) {
  if (keys.size() <= 16) {  // pairwise
    for (std::size_t i = 1; i < keys.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (keys[i] == keys[j]) return &keys[i];
      }
    }
    return nullptr;
  }
  // An open-addressing table of positions + 1.
  std::size_t cap = 32;
  while (cap < 2 * keys.size())
    cap *= 2;
  slots_.assign(cap, 0);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    for (std::size_t h = std::hash<std::string_view>{}(keys[i]) & (cap - 1);;
         h = (h + 1) & (cap - 1)) {
      if (slots_[h] == 0) {
        slots_[h] = static_cast<std::uint32_t>(i + 1);
        break;
      }
      if (keys[slots_[h] - 1] == keys[i]) return &keys[i];
    }
  }
  return nullptr;
}

bool index_parser::check_tree(std::size_t& pos, std::size_t& leaf, std::string& path) {
  const tree_node& n = ix_.nodes[pos++];
  switch (n.kind) {
    case tree::kind::none:
      return true;
    case tree::kind::leaf: {
      const leaf_entry& le = ix_.leaves[leaf];
      if (le.path != path) {
        return fail(sink.corrupt("leaf " + std::to_string(leaf) + ": path " + shown(le.path) +
                                 " does not match the tree's path " + shown(path)));
      }
      ++leaf;
      return true;
    }
    case tree::kind::dict: {
      const std::size_t first = keys_.size();
      const std::size_t len = path.size();
      for (std::uint32_t i = 0; i < n.children; ++i) {
        const std::string_view key = ix_.key(ix_.nodes[pos]);
        keys_.push_back(key);
        if (len != 0) path += '/';
        append_escaped_key(path, key);
        if (!check_tree(pos, leaf, path)) return false;
        path.resize(len);
      }
      // (Nested dicts pushed and popped their keys: this dict's are keys_[first, ...).)
      const std::string_view* dup = find_duplicate({keys_.data() + first, n.children});
      if (dup) {
        return fail(sink.corrupt("tree: duplicate key " + shown(*dup) + " in dict " + shown(path)));
      }
      keys_.resize(first);
      return true;
    }
    case tree::kind::list: {
      const std::size_t len = path.size();
      for (std::uint32_t i = 0; i < n.children; ++i) {
        if (len != 0) path += '/';
        append_u64(path, i);
        if (!check_tree(pos, leaf, path)) return false;
        path.resize(len);
      }
      return true;
    }
  }
  return fail(sink.corrupt("tree: bad node"));
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

void set_structure(index& ix, const tree& t) {
  ix.nodes.clear();
  ix.keys.clear();
  add_nodes(ix, t, {});
}

tree structure(const index& ix) {
  return build_tree(
             ix, [&](std::size_t i) { return array::spec(ix.leaves[i].dtype, ix.leaves[i].shape); })
      .value();
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
  if (ix.nodes.empty()) {
    out += "null";
  } else {
    std::size_t pos = 0;
    append_node(out, ix, pos, next_leaf);
  }
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
  if (!is_valid_utf8(json)) return fail(errc::corrupt, "index.json: not valid UTF-8");
  json::reader r(json.data(), json.size());
  index_parser p(r, json, limits);
  return p.run();
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
