// ckpt-inspect show CKPT_DIR [--leaf PATH]: the tree as an outline, totals, metadata and job.
#include "common.hpp"

#include <boost/json/array.hpp>

namespace ckpt::inspect {

namespace {

boost::json::object leaf_json(const format::leaf_entry& le) {
  const auto s = stats_of(le);
  boost::json::object o;
  o["path"] = le.path;
  o["dtype"] = dtype_name(le.dtype);
  o["shape"] = shape_json(le.shape);
  o["logical_bytes"] = le.num_bytes;
  o["stored_bytes"] = s.stored;
  o["ratio"] = s.stored ? static_cast<double>(le.num_bytes) / static_cast<double>(s.stored) : 0.0;
  o["num_chunks"] = le.chunks.size();
  o["codecs"] = codec_mix_json(s);
  o["fill_bytes"] = s.fill;
  return o;
}

// The tree as JSON nodes; `next` counts leaves in flatten order.
boost::json::value tree_json(const tree& t, std::uint64_t& next) {
  boost::json::object o;
  switch (t.type()) {
    case tree::kind::none:
      o["kind"] = "none";
      break;
    case tree::kind::leaf:
      o["kind"] = "leaf";
      o["leaf"] = next++;
      break;
    case tree::kind::dict: {
      o["kind"] = "dict";
      boost::json::array items;
      for (const auto& [k, v] : t.items())
        items.push_back(boost::json::array{boost::json::value(k), tree_json(v, next)});
      o["items"] = std::move(items);
      break;
    }
    case tree::kind::list: {
      o["kind"] = "list";
      boost::json::array el;
      for (const auto& v : t.elements())
        el.push_back(tree_json(v, next));
      o["elements"] = std::move(el);
      break;
    }
  }
  return o;
}

struct totals {
  std::uint64_t logical = 0, stored = 0;
};

// Outline rows: one per node, children indented by two spaces. Returns the subtree's totals.
totals outline(const tree& t, const std::string& label, int depth, const format::index& ix,
               std::uint64_t& next, table& out) {
  const std::string name = std::string(static_cast<std::size_t>(depth) * 2, ' ') + label;
  switch (t.type()) {
    case tree::kind::none:
      out.add({name, dim("None")});
      return {};
    case tree::kind::leaf: {
      const auto& le = ix.leaves[next++];
      const auto s = stats_of(le);
      out.add({name, std::string(dtype_name(le.dtype)), shape_string(le.shape),
               human_bytes(le.num_bytes), human_bytes(s.stored),
               ratio_string(le.num_bytes, s.stored), codec_mix(s)});
      return {le.num_bytes, s.stored};
    }
    case tree::kind::dict:
    case tree::kind::list: {
      const bool dict = t.is_dict();
      const std::size_t row = out.add(
          {name, dim(dict ? "dict" : "list"),
           dim(std::to_string(t.size()) + (dict ? " key" : " item") + (t.size() == 1 ? "" : "s"))});
      totals sum;
      if (dict) {
        for (const auto& [k, v] : t.items()) {
          auto c = outline(v, escape_key(k), depth + 1, ix, next, out);
          sum.logical += c.logical;
          sum.stored += c.stored;
        }
      } else {
        for (std::size_t i = 0; i < t.elements().size(); ++i) {
          auto c = outline(t.elements()[i], std::to_string(i), depth + 1, ix, next, out);
          sum.logical += c.logical;
          sum.stored += c.stored;
        }
      }
      out.set(row, 3, dim(human_bytes(sum.logical)));
      out.set(row, 4, dim(human_bytes(sum.stored)));
      out.set(row, 5, dim(ratio_string(sum.logical, sum.stored)));
      return sum;
    }
  }
  return {};
}

int show_leaf(const opened& ck, const std::string& path, bool json) {
  const format::leaf_entry* le = nullptr;
  for (const auto& l : ck.index.leaves) {
    if (l.path == path) le = &l;
  }
  if (!le) {
    const tree* node = ck.structure.find(path);
    if (node) {
      throw tool_error("\"" + path + "\" in " + ck.path.string() + " is a " +
                       (node->is_dict()   ? "dict"
                        : node->is_list() ? "list"
                                          : "None") +
                       ", not a leaf");
    }
    throw tool_error("no leaf \"" + path + "\" in " + ck.path.string());
  }
  if (json) {
    auto o = leaf_json(*le);
    boost::json::array chunks;
    for (std::size_t i = 0; i < le->chunks.size(); ++i) {
      const auto& c = le->chunks[i];
      chunks.push_back(boost::json::object{{"index", i},
                                           {"file", ck.index.files[c.file].name},
                                           {"offset", c.offset},
                                           {"stored", c.stored_size},
                                           {"raw", c.raw_size},
                                           {"codec", format::codec_name(c.codec)},
                                           {"xxh3", format::checksum_hex(c.xxh3)},
                                           {"fill_bytes", format::run_bytes(c.runs)}});
    }
    o["chunks"] = std::move(chunks);
    print_json(boost::json::object{{"path", ck.path.string()}, {"leaf", std::move(o)}});
    return exit_ok;
  }
  const auto s = stats_of(*le);
  std::printf("%s %s\n", bold("leaf").c_str(), le->path.c_str());
  std::printf("  dtype %s, shape %s, logical %s, stored %s, ratio %s, %zu chunk%s\n",
              std::string(dtype_name(le->dtype)).c_str(), shape_string(le->shape).c_str(),
              human_bytes(le->num_bytes).c_str(), human_bytes(s.stored).c_str(),
              ratio_string(le->num_bytes, s.stored).c_str(), le->chunks.size(),
              le->chunks.size() == 1 ? "" : "s");
  if (le->chunks.empty()) return exit_ok;
  table t({"#", "FILE", "OFFSET", "STORED", "RAW", "CODEC", "XXH3", "FILL"},
          {true, false, true, true, true, false, false, true});
  for (std::size_t i = 0; i < le->chunks.size(); ++i) {
    const auto& c = le->chunks[i];
    t.add({std::to_string(i), ck.index.files[c.file].name, std::to_string(c.offset),
           std::to_string(c.stored_size), std::to_string(c.raw_size),
           std::string(format::codec_name(c.codec)), format::checksum_hex(c.xxh3),
           std::to_string(format::run_bytes(c.runs))});
  }
  t.print(stdout, "  ");
  return exit_ok;
}

}  // namespace

int show_main(const args& a) {
  expect_positional(a, 1, "show CKPT_DIR [--leaf PATH] [--json]");
  if (auto cf = checkpoint::read_files_blocking(a.positional[0]);
      cf && cf.value().sharded() && cf.value().committed()) {
    return show_sharded(a.positional[0], cf.value(), a);
  }
  const opened ck = open_checkpoint(a.positional[0]);
  if (a.leaf) return show_leaf(ck, *a.leaf, a.json);
  const auto& ix = ck.index;
  std::uint64_t chunks = 0, logical = 0, stored = 0;
  for (const auto& le : ix.leaves) {
    chunks += le.chunks.size();
    logical += le.num_bytes;
    stored += stats_of(le).stored;
  }
  if (a.json) {
    boost::json::object o;
    o["path"] = ck.path.string();
    o["version"] = boost::json::array{ck.index.read_major, ck.index.read_minor};
    o["created_unix_ns"] = ck.commit.created_unix_ns;
    o["logical_bytes"] = ck.commit.logical_bytes;
    o["stored_bytes"] = ck.commit.stored_bytes;
    o["ratio"] = stored ? static_cast<double>(logical) / static_cast<double>(stored) : 0.0;
    o["num_leaves"] = ix.leaves.size();
    o["num_chunks"] = chunks;
    boost::json::array files;
    for (const auto& f : ix.files) {
      boost::json::object fo{{"name", f.name}, {"size", f.size}};
      if (!f.origin.empty()) fo["origin"] = f.origin;
      files.push_back(std::move(fo));
    }
    o["files"] = std::move(files);
    // Only when something is shared, so that an ordinary checkpoint's document is unchanged.
    if (const auto sh = sharing_of(ck.path, ix); sh.any()) {
      o["own_files"] = sh.own.files;
      o["own_bytes"] = sh.own.bytes;
      o["own_linked_elsewhere"] = sh.own.linked;
      boost::json::array shared;
      for (const auto& g : sh.shared) {
        shared.push_back(boost::json::object{{"origin", g.origin},
                                             {"files", g.files},
                                             {"bytes", g.bytes},
                                             {"linked_elsewhere", g.linked},
                                             {"missing", g.missing}});
      }
      o["shared"] = std::move(shared);
    }
    std::uint64_t next = 0;
    o["tree"] = tree_json(ck.structure, next);
    boost::json::array leaves;
    for (const auto& le : ix.leaves)
      leaves.push_back(leaf_json(le));
    o["leaves"] = std::move(leaves);
    o["metadata"] = ck.metadata;
    if (ck.job) {
      o["job"] = *ck.job;
    } else {
      o["job"] = nullptr;
    }
    print_json(o);
    return exit_ok;
  }

  std::printf("%s %s\n", bold("checkpoint").c_str(), ck.path.string().c_str());
  std::printf("  format %llu.%llu, created %s\n",
              static_cast<unsigned long long>(ck.index.read_major),
              static_cast<unsigned long long>(ck.index.read_minor),
              human_time(ck.commit.created_unix_ns).c_str());
  std::printf("\n");
  table t({"PATH", "DTYPE", "SHAPE", "LOGICAL", "STORED", "RATIO", "CODECS"},
          {false, false, false, true, true, true, false});
  std::uint64_t next = 0;
  const tree& root = ck.structure;
  if (root.is_dict()) {
    for (const auto& [k, v] : root.items())
      outline(v, escape_key(k), 0, ix, next, t);
  } else if (root.is_list()) {
    for (std::size_t i = 0; i < root.elements().size(); ++i)
      outline(root.elements()[i], std::to_string(i), 0, ix, next, t);
  } else {
    outline(root, "(root)", 0, ix, next, t);
  }
  t.print(stdout, "  ");
  std::printf("\n");
  std::printf("  %s %zu leaves, %llu chunks in %zu data file%s; logical %s, stored %s, ratio %s\n",
              bold("total").c_str(), ix.leaves.size(), static_cast<unsigned long long>(chunks),
              ix.files.size(), ix.files.size() == 1 ? "" : "s", human_bytes(logical).c_str(),
              human_bytes(stored).c_str(), ratio_string(logical, stored).c_str());
  if (const auto sh = sharing_of(ck.path, ix); sh.any()) {
    std::printf("  %s %s\n", bold("holds").c_str(), describe_group(sh.own).c_str());
    for (const auto& g : sh.shared)
      std::printf("  %s %s\n", bold("shares").c_str(), describe_group(g).c_str());
  }
  std::printf("\n%s %s\n", bold("metadata").c_str(), pretty_json(ck.metadata).c_str());
  if (ck.job) {
    if (const auto* spec = ck.job->if_contains("spec")) {
      std::printf("\n%s %s\n", bold("job spec").c_str(), pretty_json(*spec).c_str());
    }
    if (const auto* config = ck.job->if_contains("config")) {
      std::printf("\n%s %s\n", bold("job config").c_str(), pretty_json(*config).c_str());
    }
    for (const auto& kv : *ck.job) {
      if (kv.key() == "spec" || kv.key() == "config") continue;
      std::printf("\n%s %s\n", bold("job " + std::string(kv.key())).c_str(),
                  pretty_json(kv.value()).c_str());
    }
  } else {
    std::printf("\n%s none\n", bold("job").c_str());
  }
  return exit_ok;
}

}  // namespace ckpt::inspect
