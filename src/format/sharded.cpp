// sharded-index.json and the sharded COMMIT: written with Boost.JSON (which keeps key order),
// parsed with simdjson's DOM (which keeps duplicate keys, so that they can be refused), every
// number and name checked as docs/FORMAT.md requires.
#include "format/sharded.hpp"

#include "format/codec.hpp"

#include <ckpt/tree.hpp>

#include <simdjson.h>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <unordered_set>

namespace ckpt::format {

namespace dom = simdjson::dom;

std::string rank_dir_name(std::uint32_t rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank-%05u", rank);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Boxes
// ---------------------------------------------------------------------------------------------

std::uint64_t box_volume(const box& b) noexcept {
  std::uint64_t v = 1;
  for (auto e : b.extent)
    v *= static_cast<std::uint64_t>(e);
  return v;
}

bool box_nonempty(const box& b) noexcept {
  return std::all_of(b.extent.begin(), b.extent.end(), [](std::int64_t e) { return e > 0; });
}

bool box_intersect(const box& a, const box& b, box& out) noexcept {
  const std::size_t n = a.offset.size();
  out.offset.resize(n);
  out.extent.resize(n);
  for (std::size_t d = 0; d < n; ++d) {
    const std::int64_t lo = std::max(a.offset[d], b.offset[d]);
    const std::int64_t hi = std::min(a.offset[d] + a.extent[d], b.offset[d] + b.extent[d]);
    if (hi <= lo) return false;
    out.offset[d] = lo;
    out.extent[d] = hi - lo;
  }
  return true;
}

std::string box_to_string(const box& b) {
  std::string s = "[";
  for (std::size_t d = 0; d < b.offset.size(); ++d) {
    if (d) s += ", ";
    s += std::to_string(b.offset[d]) + ":" + std::to_string(b.offset[d] + b.extent[d]);
  }
  return s + "]";
}

result<void> check_partition(const ckpt::shape& shape, const std::vector<box>& boxes,
                             std::string_view what, errc e) {
  const std::string leaf(what);
  CKPT_TRY(std::uint64_t total, element_count(shape));
  std::vector<std::size_t> live;  // non-empty boxes
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < boxes.size(); ++i) {
    const box& b = boxes[i];
    if (b.offset.size() != shape.size() || b.extent.size() != shape.size()) {
      return fail(e, leaf + ": slice " + std::to_string(i) + " has " +
                         std::to_string(b.offset.size()) + "/" + std::to_string(b.extent.size()) +
                         " offsets/extents, the leaf has " + std::to_string(shape.size()) +
                         " dimensions");
    }
    for (std::size_t d = 0; d < shape.size(); ++d) {
      if (b.offset[d] < 0 || b.extent[d] < 0 || b.offset[d] > shape[d] ||
          b.extent[d] > shape[d] - b.offset[d]) {
        return fail(e, leaf + ": slice " + box_to_string(b) + " is not inside the global shape " +
                           shape_to_string(shape));
      }
    }
    if (!box_nonempty(b)) continue;
    live.push_back(i);
    sum += box_volume(b);  // each <= total < 2^63; stop before the sum can overflow
    if (sum > total) break;
  }
  if (sum > total) {
    return fail(e, leaf + ": slices overlap (they hold more elements than the global shape " +
                       shape_to_string(shape) + ")");
  }
  // Pairwise disjointness by a sweep along the dimension with the most distinct offsets (the
  // slicing dimension, where few boxes are active at once).
  if (!shape.empty() && live.size() > 1) {
    std::size_t best = 0, best_distinct = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) {
      std::vector<std::int64_t> offs;
      for (auto i : live)
        offs.push_back(boxes[i].offset[d]);
      std::sort(offs.begin(), offs.end());
      const std::size_t distinct =
          static_cast<std::size_t>(std::unique(offs.begin(), offs.end()) - offs.begin());
      if (distinct > best_distinct) best = d, best_distinct = distinct;
    }
    std::sort(live.begin(), live.end(), [&](std::size_t a, std::size_t b) {
      return boxes[a].offset[best] < boxes[b].offset[best];
    });
    std::vector<std::size_t> active;
    box scratch;
    for (auto i : live) {
      const std::int64_t start = boxes[i].offset[best];
      std::erase_if(active, [&](std::size_t j) {
        return boxes[j].offset[best] + boxes[j].extent[best] <= start;
      });
      for (auto j : active) {
        if (box_intersect(boxes[i], boxes[j], scratch)) {
          return fail(e, leaf + ": slices " + box_to_string(boxes[j]) + " and " +
                             box_to_string(boxes[i]) + " overlap");
        }
      }
      active.push_back(i);
    }
  } else if (shape.empty() && live.size() > 1) {
    return fail(e, leaf + ": a scalar has more than one slice");
  }
  if (sum != total) {
    return fail(e, leaf + ": slices cover " + std::to_string(sum) + " of the " +
                       std::to_string(total) + " elements of the global shape " +
                       shape_to_string(shape));
  }
  return success();
}

// ---------------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------------

namespace {

boost::json::array shape_json(const ckpt::shape& s) {
  boost::json::array a;
  for (auto x : s)
    a.push_back(x);
  return a;
}

boost::json::array version_json() {
  return boost::json::array{sharded_version_major, sharded_version_minor};
}

boost::json::object file_ref(std::uint64_t bytes, std::uint64_t h) {
  return boost::json::object{{"bytes", bytes}, {"xxh3", checksum_hex(h)}};
}

}  // namespace

std::string encode_sharded_index(const sharded_index& ix) {
  boost::json::object root;
  root["format"] = sharded_index_format;
  root["version"] = version_json();
  boost::json::array ranks;
  for (const auto& r : ix.ranks)
    ranks.push_back(
        boost::json::object{{"dir", r.dir}, {"commit", file_ref(r.commit_bytes, r.commit_xxh3)}});
  root["ranks"] = std::move(ranks);
  boost::json::array leaves;
  for (const auto& le : ix.leaves) {
    boost::json::array slices;
    for (const auto& s : le.slices)
      slices.push_back(boost::json::array{s.rank, boost::json::string(s.leaf),
                                          shape_json(s.where.offset), shape_json(s.where.extent)});
    leaves.push_back(boost::json::object{{"path", le.path},
                                         {"dtype", dtype_name(le.dtype)},
                                         {"shape", shape_json(le.shape)},
                                         {"replicated", le.replicated},
                                         {"slices", std::move(slices)}});
  }
  root["leaves"] = std::move(leaves);
  return boost::json::serialize(root);
}

std::string encode_sharded_commit(const sharded_commit& m) {
  boost::json::object root;
  root["format"] = sharded_commit_format;
  root["version"] = version_json();
  root["index"] = file_ref(m.index_bytes, m.index_xxh3);
  root["metadata"] = file_ref(m.metadata_bytes, m.metadata_xxh3);
  if (m.has_job) root["job"] = file_ref(m.job_bytes, m.job_xxh3);
  root["ranks"] = m.ranks;
  root["logical_bytes"] = m.logical_bytes;
  root["stored_bytes"] = m.stored_bytes;
  root["created_unix_ns"] = m.created_unix_ns;
  return boost::json::serialize(root) + "\n";
}

// ---------------------------------------------------------------------------------------------
// Parsers
// ---------------------------------------------------------------------------------------------

namespace {

// Shows untrusted text in a message: at most 64 bytes, control bytes as '?'.
std::string shown(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 64))
    out += static_cast<unsigned char>(c) < 0x20 ? '?' : c;
  if (s.size() > 64) out += "...";
  return out + "\"";
}

bool plain_name(std::string_view s) {
  if (s.empty() || s == "." || s == ".." || s.size() > 255) return false;
  return s.find('/') == std::string_view::npos && s.find('\0') == std::string_view::npos;
}

// A parser over one file: errors name it, and `strict` (own minor version or lower) refuses
// unknown keys.
struct reader {
  std::string file;
  bool strict = true;

  error corrupt(std::string_view msg) const {
    return error(errc::corrupt, file + ": " + std::string(msg));
  }
  error limit(std::string_view msg) const {
    return error(errc::limit_exceeded, file + ": " + std::string(msg));
  }

  result<std::uint64_t> u64(dom::element e, std::string_view where) const {
    std::uint64_t v = 0;
    if ((e.type() != dom::element_type::INT64 && e.type() != dom::element_type::UINT64) ||
        e.get_uint64().get(v)) {
      return fail(corrupt(std::string(where) + ": expected a non-negative integer"));
    }
    return v;
  }
  result<std::string_view> str(dom::element e, std::string_view where) const {
    std::string_view s;
    if (e.get_string().get(s)) return fail(corrupt(std::string(where) + ": expected a string"));
    return s;
  }
  result<dom::array> arr(dom::element e, std::string_view where) const {
    dom::array a;
    if (e.get_array().get(a)) return fail(corrupt(std::string(where) + ": expected an array"));
    return a;
  }
  result<dom::object> obj(dom::element e, std::string_view where) const {
    dom::object o;
    if (e.get_object().get(o)) return fail(corrupt(std::string(where) + ": expected an object"));
    return o;
  }
  result<ckpt::shape> extents(dom::element e, std::string_view where,
                              std::uint32_t max_rank) const {
    CKPT_TRY(dom::array a, arr(e, where));
    ckpt::shape s;
    for (dom::element x : a) {
      if (s.size() >= max_rank) {
        return fail(
            limit(std::string(where) + ": more than " + std::to_string(max_rank) + " dimensions"));
      }
      CKPT_TRY(std::uint64_t v, u64(x, where));
      if (v >= (1ull << 63)) {
        return fail(
            corrupt(std::string(where) + ": extent " + std::to_string(v) + " is not below 2^63"));
      }
      s.push_back(static_cast<std::int64_t>(v));
    }
    return s;
  }
  // Calls f(key, value) for each member; refuses duplicates and (when strict) unknown keys;
  // `required` must all be present.
  template <class F>
  result<void> members(dom::object o, std::string_view where,
                       std::initializer_list<std::string_view> known,
                       std::initializer_list<std::string_view> required, F&& f) const {
    std::vector<std::string_view> seen;
    for (dom::key_value_pair kv : o) {
      const bool is_known = std::find(known.begin(), known.end(), kv.key) != known.end();
      if (!is_known) {
        if (strict) {
          return fail(corrupt(std::string(where) + ": unknown key " + shown(kv.key) +
                              " in a version " + std::to_string(sharded_version_major) + "." +
                              std::to_string(sharded_version_minor) + " file"));
        }
        continue;
      }
      if (std::find(seen.begin(), seen.end(), kv.key) != seen.end()) {
        return fail(corrupt(std::string(where) + ": duplicate key " + shown(kv.key)));
      }
      seen.push_back(kv.key);
      CKPT_TRY(f(kv.key, kv.value));
    }
    for (auto r : required) {
      if (std::find(seen.begin(), seen.end(), r) == seen.end()) {
        return fail(corrupt(std::string(where) + ": missing key \"" + std::string(r) + "\""));
      }
    }
    return success();
  }
  result<void> file_ref(dom::element e, std::string_view where, std::uint64_t& bytes,
                        std::uint64_t& h) const {
    CKPT_TRY(dom::object o, obj(e, where));
    return members(o, where, {"bytes", "xxh3"}, {"bytes", "xxh3"},
                   [&](std::string_view k, dom::element v) -> result<void> {
                     const std::string w = std::string(where) + "." + std::string(k);
                     if (k == "bytes") {
                       CKPT_TRY(bytes, u64(v, w));
                       return success();
                     }
                     CKPT_TRY(std::string_view s, str(v, w));
                     auto r = parse_checksum_hex(s);
                     if (!r) return fail(corrupt(w + ": " + r.error().message()));
                     h = r.value();
                     return success();
                   });
  }
  // Parses `json`, checks "format" and "version" (a different major first of all), and sets
  // `strict` from the minor version.
  result<dom::object> open(dom::parser& parser, std::string_view json,
                           std::string_view expected_format) {
    dom::element doc;
    if (auto e = parser.parse(json.data(), json.size(), true).get(doc)) {
      if (e == simdjson::DEPTH_ERROR) return fail(limit("JSON nesting too deep"));
      return fail(corrupt(std::string("malformed JSON (") + simdjson::error_message(e) + ")"));
    }
    CKPT_TRY(dom::object root, obj(doc, "root"));
    dom::element ver;
    if (root.at_key("version").get(ver)) return fail(corrupt("missing key \"version\""));
    CKPT_TRY(dom::array va, arr(ver, "version"));
    std::vector<std::uint64_t> v;
    for (dom::element x : va) {
      CKPT_TRY(std::uint64_t u, u64(x, "version"));
      v.push_back(u);
    }
    if (v.size() != 2) return fail(corrupt("version: expected an array [major, minor]"));
    if (v[0] != sharded_version_major) {
      return fail(error(errc::unsupported_version,
                        file + ": format version " + std::to_string(v[0]) + "." +
                            std::to_string(v[1]) +
                            (v[0] > sharded_version_major ? " is newer" : " is older") +
                            " than this reader (" + std::to_string(sharded_version_major) + ".x)"));
    }
    strict = v[1] <= sharded_version_minor;
    dom::element fmt;
    if (root.at_key("format").get(fmt)) return fail(corrupt("missing key \"format\""));
    CKPT_TRY(std::string_view f, str(fmt, "format"));
    if (f != expected_format) {
      return fail(
          corrupt("format is " + shown(f) + ", expected \"" + std::string(expected_format) + "\""));
    }
    return root;
  }
};

// Paths: valid, unique, and none the ancestor of another (a leaf is never a directory).
result<void> check_paths(const reader& rd, const std::vector<sharded_leaf_entry>& leaves) {
  std::unordered_set<std::string_view> all;
  for (const auto& le : leaves) {
    if (le.path.empty()) return fail(rd.corrupt("a leaf has an empty path"));
    auto parts = split_path(le.path);
    if (!parts)
      return fail(rd.corrupt("leaf path " + shown(le.path) + ": " + parts.error().message()));
    if (!all.insert(le.path).second) {
      return fail(rd.corrupt("leaf path " + shown(le.path) + " appears twice"));
    }
  }
  for (const auto& le : leaves) {
    for (std::size_t at = le.path.find('/'); at != std::string::npos;
         at = le.path.find('/', at + 1)) {
      if (all.count(std::string_view(le.path).substr(0, at))) {
        return fail(rd.corrupt("leaf path " + shown(le.path) + " lies below the leaf " +
                               shown(le.path.substr(0, at))));
      }
    }
  }
  return success();
}

}  // namespace

result<sharded_index> parse_sharded_index(std::string_view json, const sharded_limits& limits) {
  reader rd{std::string(sharded_index_file)};
  if (json.size() > limits.max_index_bytes) {
    return fail(rd.limit(std::to_string(json.size()) + " bytes, more than the cap of " +
                         std::to_string(limits.max_index_bytes)));
  }
  dom::parser parser;
  CKPT_TRY(dom::object root, rd.open(parser, json, sharded_index_format));
  sharded_index ix;
  std::uint64_t total_slices = 0;
  auto parse_slice = [&](dom::element e, sharded_leaf_entry& le,
                         const std::string& where) -> result<void> {
    CKPT_TRY(dom::array a, rd.arr(e, where));
    if (a.size() != 4) {
      return fail(rd.corrupt(where + ": expected [RANK, \"LEAF\", [OFFSET...], [EXTENT...]]"));
    }
    slice_entry s;
    CKPT_TRY(std::uint64_t r, rd.u64(a.at(0), where + " rank"));
    // (ranks are checked against the rank table once both are read)
    s.rank = static_cast<std::uint32_t>(std::min<std::uint64_t>(r, UINT32_MAX));
    CKPT_TRY(std::string_view lp, rd.str(a.at(1), where + " leaf"));
    if (lp.empty() || lp.size() > 65536) {
      return fail(rd.corrupt(where + ": the rank's leaf path is empty or too long"));
    }
    s.leaf = std::string(lp);
    CKPT_TRY(s.where.offset, rd.extents(a.at(2), where + " offset", limits.max_rank));
    CKPT_TRY(s.where.extent, rd.extents(a.at(3), where + " extent", limits.max_rank));
    le.slices.push_back(std::move(s));
    return success();
  };
  auto parse_leaf = [&](dom::element e, const std::string& where) -> result<void> {
    CKPT_TRY(dom::object o, rd.obj(e, where));
    sharded_leaf_entry le;
    CKPT_TRY(rd.members(
        o, where, {"path", "dtype", "shape", "replicated", "slices"},
        {"path", "dtype", "shape", "slices"},
        [&](std::string_view k, dom::element v) -> result<void> {
          const std::string w = where + "." + std::string(k);
          if (k == "path") {
            CKPT_TRY(std::string_view p, rd.str(v, w));
            le.path = std::string(p);
          } else if (k == "dtype") {
            CKPT_TRY(std::string_view d, rd.str(v, w));
            auto t = parse_dtype(d);
            if (!t) return fail(rd.corrupt(w + ": unknown dtype " + shown(d)));
            le.dtype = t.value();
          } else if (k == "shape") {
            CKPT_TRY(le.shape, rd.extents(v, w, limits.max_rank));
          } else if (k == "replicated") {
            bool b = false;
            if (v.get_bool().get(b)) return fail(rd.corrupt(w + ": expected true or false"));
            le.replicated = b;
          } else {
            CKPT_TRY(dom::array a, rd.arr(v, w));
            for (dom::element s : a) {
              if (++total_slices > limits.max_slices) {
                return fail(rd.limit("more than " + std::to_string(limits.max_slices) + " slices"));
              }
              CKPT_TRY(parse_slice(s, le, w + "[" + std::to_string(le.slices.size()) + "]"));
            }
          }
          return success();
        }));
    auto bytes = byte_size(le.dtype, le.shape);
    if (!bytes) {
      return fail(rd.corrupt(where + " (" + shown(le.path) + "): " + bytes.error().message()));
    }
    le.num_bytes = bytes.value();
    ix.leaves.push_back(std::move(le));
    return success();
  };
  CKPT_TRY(rd.members(
      root, "root", {"format", "version", "ranks", "leaves"},
      {"format", "version", "ranks", "leaves"},
      [&](std::string_view k, dom::element v) -> result<void> {
        if (k == "ranks") {
          CKPT_TRY(dom::array a, rd.arr(v, "ranks"));
          if (a.size() > limits.max_ranks) {
            return fail(rd.limit("more than " + std::to_string(limits.max_ranks) + " ranks"));
          }
          for (dom::element r : a) {
            const std::string w = "ranks[" + std::to_string(ix.ranks.size()) + "]";
            CKPT_TRY(dom::object o, rd.obj(r, w));
            rank_entry re;
            CKPT_TRY(rd.members(o, w, {"dir", "commit"}, {"dir", "commit"},
                                [&](std::string_view rk, dom::element rv) -> result<void> {
                                  if (rk == "dir") {
                                    CKPT_TRY(std::string_view d, rd.str(rv, w + ".dir"));
                                    if (!plain_name(d) || d[0] == '.') {
                                      return fail(rd.corrupt(w + ".dir: " + shown(d) +
                                                             " is not a plain directory name"));
                                    }
                                    re.dir = std::string(d);
                                    return success();
                                  }
                                  return rd.file_ref(rv, w + ".commit", re.commit_bytes,
                                                     re.commit_xxh3);
                                }));
            ix.ranks.push_back(std::move(re));
          }
        } else if (k == "leaves") {
          CKPT_TRY(dom::array a, rd.arr(v, "leaves"));
          if (a.size() > limits.max_leaves) {
            return fail(rd.limit("more than " + std::to_string(limits.max_leaves) + " leaves"));
          }
          for (dom::element le : a) {
            CKPT_TRY(parse_leaf(le, "leaves[" + std::to_string(ix.leaves.size()) + "]"));
          }
        }
        return success();
      }));
  if (ix.ranks.empty()) return fail(rd.corrupt("ranks: empty"));
  {
    std::unordered_set<std::string_view> dirs;
    for (const auto& r : ix.ranks) {
      if (!dirs.insert(r.dir).second) {
        return fail(rd.corrupt("rank directory " + shown(r.dir) + " appears twice"));
      }
    }
  }
  CKPT_TRY(check_paths(rd, ix.leaves));
  for (const auto& le : ix.leaves) {
    std::vector<box> boxes;
    for (const auto& s : le.slices) {
      if (s.rank >= ix.ranks.size()) {
        return fail(rd.corrupt("leaf " + shown(le.path) + ": slice of rank " +
                               std::to_string(s.rank) + ", but there are " +
                               std::to_string(ix.ranks.size()) + " ranks"));
      }
      boxes.push_back(s.where);
    }
    if (le.replicated && (le.slices.size() != 1 ||
                          le.slices[0].where != box{ckpt::shape(le.shape.size(), 0), le.shape})) {
      return fail(rd.corrupt("leaf " + shown(le.path) +
                             " is replicated but is not one slice holding the whole array"));
    }
    CKPT_TRY(check_partition(le.shape, boxes, rd.file + ": leaf " + shown(le.path), errc::corrupt));
  }
  return ix;
}

result<sharded_commit> parse_sharded_commit(std::string_view json) {
  reader rd{"COMMIT"};
  constexpr std::size_t max_commit_bytes = 1 << 20;
  if (json.size() > max_commit_bytes) {
    return fail(rd.limit(std::to_string(json.size()) + " bytes, more than the cap of " +
                         std::to_string(max_commit_bytes)));
  }
  dom::parser parser;
  CKPT_TRY(dom::object root, rd.open(parser, json, sharded_commit_format));
  sharded_commit m;
  CKPT_TRY(rd.members(root, "root",
                      {"format", "version", "index", "metadata", "job", "ranks", "logical_bytes",
                       "stored_bytes", "created_unix_ns"},
                      {"format", "version", "index", "metadata", "ranks", "logical_bytes",
                       "stored_bytes", "created_unix_ns"},
                      [&](std::string_view k, dom::element v) -> result<void> {
                        if (k == "index") return rd.file_ref(v, k, m.index_bytes, m.index_xxh3);
                        if (k == "metadata")
                          return rd.file_ref(v, k, m.metadata_bytes, m.metadata_xxh3);
                        if (k == "job") {
                          m.has_job = true;
                          return rd.file_ref(v, k, m.job_bytes, m.job_xxh3);
                        }
                        if (k == "ranks") {
                          CKPT_TRY(m.ranks, rd.u64(v, k));
                        } else if (k == "logical_bytes") {
                          CKPT_TRY(m.logical_bytes, rd.u64(v, k));
                        } else if (k == "stored_bytes") {
                          CKPT_TRY(m.stored_bytes, rd.u64(v, k));
                        } else if (k == "created_unix_ns") {
                          CKPT_TRY(m.created_unix_ns, rd.u64(v, k));
                        }
                        return success();
                      }));
  return m;
}

bool is_sharded_commit_text(std::string_view text) noexcept {
  // Only selects the parser: parse_sharded_commit checks that this is the "format" value.
  return text.find("\"ckpt-sharded-commit\"") != std::string_view::npos;
}

}  // namespace ckpt::format
