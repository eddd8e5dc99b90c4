// The index's cross checks, once the walk has read it all: file names, chunk extents (bounds,
// then overlap by a radix sort), dict keys and leaf paths against the tree's node list.
#include "format/index_checks.hpp"

#include "format/json_support.hpp"

#include <algorithm>
#include <functional>
#include <span>

namespace ckpt::format::detail {

namespace {

using json::shown;

void append_u64(std::string& out, std::uint64_t v) {
  json::append_u64(out, v);
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

class checker {
 public:
  explicit checker(const index& ix) : ix_(ix) {}

  result<void> check_files();
  result<void> check_chunks(std::uint64_t total_chunks);
  /// Dict keys unique; each leaf's path is the one its place in the tree implies.
  bool check_tree(std::size_t& pos, std::size_t& leaf, std::string& path);
  error& err() noexcept { return err_; }

 private:
  bool fail(error e) {
    err_ = std::move(e);
    return false;
  }
  /// A key that is in `keys` twice, or null.
  const std::string_view* find_duplicate(std::span<const std::string_view> keys);
  std::string leaf_name(std::size_t i) const { return detail::leaf_name(ix_.leaves, i); }

  const index& ix_;
  json::error_sink sink{"index.json"};
  error err_;
  std::vector<std::string_view> keys_;  // check_tree's scratch
  std::vector<std::uint32_t> slots_;    // check_tree's scratch
};

result<void> checker::check_files() {
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

result<void> checker::check_chunks(std::uint64_t total_chunks) {
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
  ex.reserve(total_chunks);
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
      if (c.stored_size == 0) continue;  // (all fill runs: nothing stored)
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

const std::string_view* checker::find_duplicate(std::span<const std::string_view> keys) {
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

bool checker::check_tree(std::size_t& pos, std::size_t& leaf, std::string& path) {
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

std::string leaf_name(const std::vector<leaf_entry>& leaves, std::size_t i) {
  std::string s = "leaf " + std::to_string(i);
  if (i < leaves.size() && !leaves[i].path.empty()) s += " " + shown(leaves[i].path);
  return s;
}

result<void> check_extents(const index& ix, std::uint64_t total_chunks) {
  checker c(ix);
  CKPT_TRY(c.check_files());
  return c.check_chunks(total_chunks);
}

result<void> check_tree(const index& ix) {
  checker c(ix);
  std::size_t pos = 0, leaf = 0;
  std::string path;
  if (!ix.nodes.empty() && !c.check_tree(pos, leaf, path)) return std::move(c.err());
  return success();
}

}  // namespace ckpt::format::detail

namespace ckpt::format {

namespace detail {

std::string too_deep(std::uint32_t max_depth) {
  return "tree: nesting deeper than " + std::to_string(max_depth) + " levels";
}
std::string key_too_long(std::string_view key, std::uint32_t max_key_bytes) {
  return "tree: dict key " + shown(key) + " is longer than " + std::to_string(max_key_bytes) +
         " bytes";
}
std::string rank_too_high(const std::string& leaf, std::uint32_t max_rank) {
  return leaf + ": rank above the cap of " + std::to_string(max_rank);
}
std::string too_many(std::uint64_t max, std::string_view what) {
  return "more than " + std::to_string(max) + " " + std::string(what);
}

}  // namespace detail

result<void> check_writable(const index& ix, const parse_limits& lim) {
  const json::error_sink sink{"index.json"};
  const std::uint32_t max_depth = std::min<std::uint32_t>(lim.max_depth, 1024);
  if (ix.leaves.size() > lim.max_leaves) {
    return fail(sink.limit("tree: " + detail::too_many(lim.max_leaves, "leaves")));
  }
  if (ix.nodes.size() - ix.leaves.size() > lim.max_tree_nodes) {
    return fail(
        sink.limit("tree: " + detail::too_many(lim.max_tree_nodes, "None/dict/list nodes")));
  }
  if (ix.files.size() > lim.max_files) {
    return fail(sink.limit(detail::too_many(lim.max_files, "files")));
  }
  // Depth of each node in the pre-order list: a stack of the children still due per level.
  std::vector<std::uint32_t> due;
  for (const auto& n : ix.nodes) {
    while (!due.empty() && due.back() == 0)
      due.pop_back();
    if (!due.empty()) --due.back();
    if (due.size() + 1 > max_depth) return fail(sink.limit(detail::too_deep(max_depth)));
    const std::string_view key = ix.key(n);
    if (key.size() > lim.max_key_bytes) {
      return fail(sink.limit(detail::key_too_long(key, lim.max_key_bytes)));
    }
    if (!is_valid_utf8(key)) {
      return fail(sink.make(errc::invalid_argument,
                            "tree: dict key " + json::shown(key) + " is not valid UTF-8"));
    }
    if (n.kind == tree::kind::dict || n.kind == tree::kind::list) due.push_back(n.children);
  }
  std::uint64_t chunks = 0;
  for (std::size_t i = 0; i < ix.leaves.size(); ++i) {
    if (ix.leaves[i].shape.size() > lim.max_rank) {
      return fail(sink.limit(detail::rank_too_high(detail::leaf_name(ix.leaves, i), lim.max_rank)));
    }
    chunks += ix.leaves[i].chunks.size();
  }
  if (chunks > lim.max_chunks) return fail(sink.limit(detail::too_many(lim.max_chunks, "chunks")));
  return success();
}

}  // namespace ckpt::format
