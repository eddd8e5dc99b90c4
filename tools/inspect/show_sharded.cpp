// ckpt-inspect show for a sharded checkpoint: the global leaves as an outline with their
// sharding (which dimensions are split, into how many slices, on which ranks), or one leaf's
// slices with the rank checkpoint and leaf that hold each. Stored sizes come from the ranks'
// own indexes.
#include "common.hpp"

#include <ckpt/tree.hpp>

#include <boost/json/array.hpp>

#include <map>
#include <set>

namespace ckpt::inspect {

namespace {

namespace fs = std::filesystem;

// Every rank's index (none where a rank's checkpoint cannot be read: sizes show as "?").
struct rank_indexes {
  std::vector<std::optional<format::index>> ix;
  std::vector<std::map<std::string, const format::leaf_entry*, std::less<>>> by_path;

  rank_indexes(const fs::path& path, const format::sharded_index& six) {
    ix.resize(six.ranks.size());
    by_path.resize(six.ranks.size());
    for (std::size_t r = 0; r < six.ranks.size(); ++r) {
      auto cf = checkpoint::read_files_blocking(path / six.ranks[r].dir);
      if (cf && cf.value().committed() && cf.value().index) {
        ix[r] = std::move(*cf.value().index);
        for (const auto& le : ix[r]->leaves)
          by_path[r].emplace(le.path, &le);
      }
    }
  }
  // The stored bytes of a slice's leaf (none when unknown).
  std::optional<std::uint64_t> stored(const format::slice_entry& s) const {
    if (s.rank >= by_path.size()) return std::nullopt;
    auto it = by_path[s.rank].find(s.leaf);
    if (it == by_path[s.rank].end()) return std::nullopt;
    return stats_of(*it->second).stored;
  }
  std::optional<std::uint64_t> stored(const format::sharded_leaf_entry& le) const {
    std::uint64_t sum = 0;
    for (const auto& s : le.slices) {
      auto n = stored(s);
      if (!n) return std::nullopt;
      sum += *n;
    }
    return sum;
  }
};

std::vector<std::size_t> split_dims(const format::sharded_leaf_entry& le) {
  std::vector<std::size_t> dims;
  for (std::size_t d = 0; d < le.shape.size(); ++d) {
    for (const auto& s : le.slices) {
      if (s.where.extent[d] != le.shape[d]) {
        dims.push_back(d);
        break;
      }
    }
  }
  return dims;
}

// "ranks 0-3", "ranks 0, 2", "rank 1"
std::string ranks_string(const format::sharded_leaf_entry& le) {
  std::set<std::uint32_t> rs;
  for (const auto& s : le.slices)
    rs.insert(s.rank);
  if (rs.empty()) return "no rank";
  if (rs.size() == 1) return "rank " + std::to_string(*rs.begin());
  const bool contiguous = *rs.rbegin() - *rs.begin() + 1 == rs.size();
  if (contiguous)
    return "ranks " + std::to_string(*rs.begin()) + "-" + std::to_string(*rs.rbegin());
  std::string out = "ranks ";
  for (auto r : rs)
    out += (out.size() > 6 ? ", " : "") + std::to_string(r);
  return out;
}

// "replicated (rank 0)", "whole (rank 2)", "4 slices on dim 0 (ranks 0-3)"
std::string sharding_string(const format::sharded_leaf_entry& le) {
  if (le.replicated) return "replicated (" + ranks_string(le) + ")";
  const auto dims = split_dims(le);
  if (dims.empty()) {
    return (le.slices.size() == 1 ? "whole (" : std::to_string(le.slices.size()) + " slices (") +
           ranks_string(le) + ")";
  }
  std::string d = dims.size() == 1 ? "dim " : "dims ";
  for (std::size_t i = 0; i < dims.size(); ++i)
    d += (i ? "," : "") + std::to_string(dims[i]);
  return std::to_string(le.slices.size()) + " slice" + (le.slices.size() == 1 ? "" : "s") + " on " +
         d + " (" + ranks_string(le) + ")";
}

boost::json::object leaf_json(const format::sharded_leaf_entry& le, const rank_indexes& ri,
                              bool with_slices) {
  boost::json::object o;
  o["path"] = le.path;
  o["dtype"] = dtype_name(le.dtype);
  o["shape"] = shape_json(le.shape);
  o["logical_bytes"] = le.num_bytes;
  if (auto s = ri.stored(le)) {
    o["stored_bytes"] = *s;
  } else {
    o["stored_bytes"] = nullptr;
  }
  o["replicated"] = le.replicated;
  boost::json::array dims;
  for (auto d : split_dims(le))
    dims.push_back(d);
  o["split_dims"] = std::move(dims);
  o["num_slices"] = le.slices.size();
  o["sharding"] = sharding_string(le);
  if (with_slices) {
    boost::json::array slices;
    for (const auto& s : le.slices) {
      boost::json::object so{{"rank", s.rank},
                             {"offset", shape_json(s.where.offset)},
                             {"extent", shape_json(s.where.extent)},
                             {"leaf", s.leaf}};
      if (auto n = ri.stored(s)) {
        so["stored_bytes"] = *n;
      } else {
        so["stored_bytes"] = nullptr;
      }
      slices.push_back(std::move(so));
    }
    o["slices"] = std::move(slices);
  }
  return o;
}

// The leaves nested along their paths: dict nodes hold children, leaves their index.
struct node {
  std::vector<std::pair<std::string, node>> children;
  std::optional<std::size_t> leaf;
  node& child(const std::string& key) {
    for (auto& [k, v] : children)
      if (k == key) return v;
    children.emplace_back(key, node{});
    return children.back().second;
  }
};

node nest(const format::sharded_index& ix) {
  node root;
  for (std::size_t i = 0; i < ix.leaves.size(); ++i) {
    auto parts = split_path(ix.leaves[i].path);
    if (!parts || parts.value().empty()) continue;  // (checked by the parser)
    node* n = &root;
    for (const auto& p : parts.value())
      n = &n->child(p);
    n->leaf = i;
  }
  return root;
}

boost::json::value tree_json(const node& n) {
  if (n.leaf) return boost::json::object{{"kind", "leaf"}, {"leaf", *n.leaf}};
  boost::json::array items;
  for (const auto& [k, v] : n.children)
    items.push_back(boost::json::array{boost::json::value(k), tree_json(v)});
  return boost::json::object{{"kind", "dict"}, {"items", std::move(items)}};
}

struct totals {
  std::uint64_t logical = 0;
  std::optional<std::uint64_t> stored = 0;
};

totals outline(const node& n, const std::string& label, int depth, const format::sharded_index& ix,
               const rank_indexes& ri, table& out) {
  const std::string name = std::string(static_cast<std::size_t>(depth) * 2, ' ') + label;
  if (n.leaf) {
    const auto& le = ix.leaves[*n.leaf];
    const auto st = ri.stored(le);
    out.add({name, std::string(dtype_name(le.dtype)), shape_string(le.shape),
             human_bytes(le.num_bytes), st ? human_bytes(*st) : "?",
             st ? ratio_string(le.num_bytes, *st) : "?", sharding_string(le)});
    return {le.num_bytes, st};
  }
  const std::size_t row = out.add(
      {name, dim("dict"),
       dim(std::to_string(n.children.size()) + " key" + (n.children.size() == 1 ? "" : "s"))});
  totals sum;
  for (const auto& [k, v] : n.children) {
    auto c = outline(v, k, depth + 1, ix, ri, out);
    sum.logical += c.logical;
    if (sum.stored && c.stored) {
      *sum.stored += *c.stored;
    } else {
      sum.stored.reset();
    }
  }
  out.set(row, 3, dim(human_bytes(sum.logical)));
  out.set(row, 4, dim(sum.stored ? human_bytes(*sum.stored) : "?"));
  out.set(row, 5, dim(sum.stored ? ratio_string(sum.logical, *sum.stored) : "?"));
  return sum;
}

int show_sharded_leaf(const fs::path& path, const format::sharded_index& ix, const rank_indexes& ri,
                      const std::string& leaf, bool json) {
  const format::sharded_leaf_entry* le = nullptr;
  for (const auto& l : ix.leaves)
    if (l.path == leaf) le = &l;
  if (!le) throw tool_error("no leaf \"" + leaf + "\" in " + path.string());
  if (json) {
    print_json(boost::json::object{{"path", path.string()}, {"leaf", leaf_json(*le, ri, true)}});
    return exit_ok;
  }
  const auto st = ri.stored(*le);
  std::printf("%s %s\n", bold("leaf").c_str(), le->path.c_str());
  std::printf("  dtype %s, global shape %s, logical %s, stored %s; %s\n",
              std::string(dtype_name(le->dtype)).c_str(), shape_string(le->shape).c_str(),
              human_bytes(le->num_bytes).c_str(), st ? human_bytes(*st).c_str() : "?",
              sharding_string(*le).c_str());
  if (le->slices.empty()) return exit_ok;
  table t({"#", "RANK", "REGION", "LOGICAL", "STORED", "LEAF IN RANK CHECKPOINT"},
          {true, true, false, true, true, false});
  for (std::size_t i = 0; i < le->slices.size(); ++i) {
    const auto& s = le->slices[i];
    const auto n = ri.stored(s);
    const auto bytes = byte_size(le->dtype, s.where.extent);
    t.add({std::to_string(i), std::to_string(s.rank), format::box_to_string(s.where),
           bytes ? human_bytes(bytes.value()) : "?", n ? human_bytes(*n) : "?",
           ix.ranks[s.rank].dir + " " + s.leaf});
  }
  t.print(stdout, "  ");
  return exit_ok;
}

}  // namespace

int show_sharded(const fs::path& path, const checkpoint::checkpoint_files& cf, const args& a) {
  const auto& ix = *cf.sharded_index;
  const auto& cm = *cf.sharded_commit;
  const rank_indexes ri(path, ix);
  if (a.leaf) return show_sharded_leaf(path, ix, ri, *a.leaf, a.json);
  std::uint64_t slices = 0;
  std::uint64_t chunk_total = 0;  // chunk bytes stored (when every rank's index was read)
  bool known = true;
  for (const auto& le : ix.leaves) {
    slices += le.slices.size();
    auto s = ri.stored(le);
    known = known && s.has_value();
    if (s) chunk_total += *s;
  }
  const node root = nest(ix);
  if (a.json) {
    boost::json::object o;
    o["path"] = path.string();
    o["sharded"] = true;
    o["version"] = boost::json::array{format::sharded_version_major, format::sharded_version_minor};
    o["created_unix_ns"] = cm.created_unix_ns;
    o["logical_bytes"] = cm.logical_bytes;
    o["stored_bytes"] = cm.stored_bytes;
    o["ratio"] = known && chunk_total
                     ? static_cast<double>(cm.logical_bytes) / static_cast<double>(chunk_total)
                     : 0.0;
    boost::json::array ranks;
    for (const auto& r : ix.ranks)
      ranks.push_back(boost::json::object{{"dir", r.dir}, {"commit_bytes", r.commit_bytes}});
    o["ranks"] = std::move(ranks);
    o["num_leaves"] = ix.leaves.size();
    o["num_slices"] = slices;
    o["tree"] = tree_json(root);
    boost::json::array leaves;
    for (const auto& le : ix.leaves)
      leaves.push_back(leaf_json(le, ri, true));
    o["leaves"] = std::move(leaves);
    o["metadata"] = *cf.metadata;
    if (cf.job) {
      o["job"] = *cf.job;
    } else {
      o["job"] = nullptr;
    }
    print_json(o);
    return exit_ok;
  }
  std::printf("%s %s\n", bold("sharded checkpoint").c_str(), path.string().c_str());
  std::printf("  format %u.%u (sharded), created %s, %zu ranks\n", format::sharded_version_major,
              format::sharded_version_minor, human_time(cm.created_unix_ns).c_str(),
              ix.ranks.size());
  std::printf("\n");
  table t({"PATH", "DTYPE", "SHAPE", "LOGICAL", "STORED", "RATIO", "SHARDING"},
          {false, false, false, true, true, true, false});
  for (const auto& [k, v] : root.children)
    outline(v, k, 0, ix, ri, t);
  t.print(stdout, "  ");
  std::printf("\n");
  std::printf(
      "  %s %zu leaves, %llu slices in %zu rank checkpoints; logical %s, stored %s, "
      "ratio %s\n",
      bold("total").c_str(), ix.leaves.size(), static_cast<unsigned long long>(slices),
      ix.ranks.size(), human_bytes(cm.logical_bytes).c_str(), human_bytes(cm.stored_bytes).c_str(),
      known ? ratio_string(cm.logical_bytes, chunk_total).c_str() : "?");
  std::printf("\n%s %s\n", bold("metadata").c_str(), pretty_json(*cf.metadata).c_str());
  if (cf.job) {
    std::printf("\n%s %s\n", bold("job").c_str(), pretty_json(*cf.job).c_str());
  } else {
    std::printf("\n%s none\n", bold("job").c_str());
  }
  return exit_ok;
}

}  // namespace ckpt::inspect
