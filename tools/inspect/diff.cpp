// ckpt-inspect diff A B: leaves added, removed and changed; metadata and job differences.
//
// Leaf data is compared by the chunk checksums of the two indexes when both leaves are chunked
// alike (same raw sizes and codecs: the codec choice is a function of the data, so equal data
// gives equal layouts). When the layouts differ the checksums say nothing (they cover stored
// bytes), and both leaves are loaded and compared byte for byte.
#include "common.hpp"

#include <ckpt/load.hpp>

#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>

#include <cstring>
#include <map>
#include <unordered_map>

namespace ckpt::inspect {

namespace {

struct leaf_change {
  std::string path;
  bool dtype = false, shape = false, data = false;
  std::optional<std::uint64_t> chunks_differing;  // when compared by checksums
  const format::leaf_entry *a = nullptr, *b = nullptr;
};

struct value_change {
  std::string key;
  std::optional<boost::json::value> a, b;  // none: absent on that side
};

// Flattens nested objects into dotted keys (arrays, scalars and empty objects are values).
void flatten_json(const boost::json::value& v, const std::string& prefix,
                  std::map<std::string, boost::json::value>& out) {
  if (v.is_object() && !v.as_object().empty()) {
    for (const auto& kv : v.as_object()) {
      const std::string k(kv.key());
      flatten_json(kv.value(), prefix.empty() ? k : prefix + "." + k, out);
    }
    return;
  }
  out.emplace(prefix, v);
}

std::vector<value_change> diff_json(const boost::json::object* a, const boost::json::object* b) {
  std::map<std::string, boost::json::value> fa, fb;
  if (a && !a->empty()) flatten_json(*a, "", fa);
  if (b && !b->empty()) flatten_json(*b, "", fb);
  std::vector<value_change> out;
  for (const auto& [k, v] : fa) {
    auto it = fb.find(k);
    if (it == fb.end()) {
      out.push_back({k, v, std::nullopt});
    } else if (v != it->second) {
      out.push_back({k, v, it->second});
    }
  }
  for (const auto& [k, v] : fb) {
    if (!fa.count(k)) out.push_back({k, std::nullopt, v});
  }
  std::sort(out.begin(), out.end(),
            [](const value_change& x, const value_change& y) { return x.key < y.key; });
  return out;
}

bool same_layout(const format::leaf_entry& a, const format::leaf_entry& b) {
  if (a.chunks.size() != b.chunks.size()) return false;
  for (std::size_t i = 0; i < a.chunks.size(); ++i) {
    if (a.chunks[i].raw_size != b.chunks[i].raw_size || a.chunks[i].codec != b.chunks[i].codec)
      return false;
  }
  return true;
}

bool same_bytes(const opened& a, const opened& b, const std::string& path) {
  auto la = load_subtree_blocking(a.path, path);
  if (!la) throw tool_error(la.error().message());
  auto lb = load_subtree_blocking(b.path, path);
  if (!lb) throw tool_error(lb.error().message());
  auto x = la.value().leaf().bytes();
  auto y = lb.value().leaf().bytes();
  return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size()) == 0);
}

boost::json::value side(const std::optional<boost::json::value>& v) {
  if (v) return *v;
  return nullptr;
}

std::string show_value(const std::optional<boost::json::value>& v) {
  if (!v) return "(absent)";
  std::string s = boost::json::serialize(*v);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace

int diff_main(const args& a) {
  expect_positional(a, 2, "diff A B [--json]");
  const opened ca = open_checkpoint(a.positional[0], exit_usage);
  const opened cb = open_checkpoint(a.positional[1], exit_usage);
  std::unordered_map<std::string_view, const format::leaf_entry*> in_b;
  for (const auto& le : cb.index.leaves)
    in_b.emplace(le.path, &le);
  std::vector<const format::leaf_entry*> added, removed;
  std::vector<leaf_change> changed;
  std::uint64_t unchanged = 0;
  std::unordered_map<std::string_view, bool> seen;
  for (const auto& la : ca.index.leaves) {
    auto it = in_b.find(la.path);
    if (it == in_b.end()) {
      removed.push_back(&la);
      continue;
    }
    seen[la.path] = true;
    const auto& lb = *it->second;
    leaf_change c{la.path, la.dtype != lb.dtype, la.shape != lb.shape, false, {}, &la, &lb};
    if (!c.dtype && !c.shape) {
      if (same_layout(la, lb)) {
        std::uint64_t n = 0;
        for (std::size_t i = 0; i < la.chunks.size(); ++i)
          n += la.chunks[i].xxh3 != lb.chunks[i].xxh3;
        c.data = n > 0;
        if (n) c.chunks_differing = n;
      } else {
        c.data = !same_bytes(ca, cb, la.path);
      }
    } else {
      c.data = true;
    }
    if (c.dtype || c.shape || c.data) {
      changed.push_back(std::move(c));
    } else {
      ++unchanged;
    }
  }
  for (const auto& lb : cb.index.leaves) {
    if (!seen.count(lb.path)) added.push_back(&lb);
  }
  const auto meta = diff_json(&ca.metadata, &cb.metadata);
  const auto job = diff_json(ca.job ? &*ca.job : nullptr, cb.job ? &*cb.job : nullptr);
  // Leaves aside, trees can differ in None nodes and empty dicts/lists.
  const bool tree_same = ca.structure.same_structure(cb.structure);
  const bool same = added.empty() && removed.empty() && changed.empty() && meta.empty() &&
                    job.empty() && tree_same;

  if (a.json) {
    auto leaf_list = [](const std::vector<const format::leaf_entry*>& v) {
      boost::json::array arr;
      for (const auto* le : v)
        arr.push_back(boost::json::object{{"path", le->path},
                                          {"dtype", dtype_name(le->dtype)},
                                          {"shape", shape_json(le->shape)}});
      return arr;
    };
    boost::json::array ch;
    for (const auto& c : changed) {
      boost::json::object o;
      o["path"] = c.path;
      if (c.dtype) {
        o["dtype"] = boost::json::array{dtype_name(c.a->dtype), dtype_name(c.b->dtype)};
      } else {
        o["dtype"] = nullptr;
      }
      if (c.shape) {
        o["shape"] = boost::json::array{shape_json(c.a->shape), shape_json(c.b->shape)};
      } else {
        o["shape"] = nullptr;
      }
      o["data"] = c.data;
      if (c.chunks_differing) {
        o["chunks_differing"] = *c.chunks_differing;
      } else {
        o["chunks_differing"] = nullptr;
      }
      ch.push_back(std::move(o));
    }
    auto values = [](const std::vector<value_change>& v) {
      boost::json::array arr;
      for (const auto& c : v)
        arr.push_back(boost::json::object{{"key", c.key}, {"a", side(c.a)}, {"b", side(c.b)}});
      return arr;
    };
    print_json(boost::json::object{{"a", ca.path.string()},
                                   {"b", cb.path.string()},
                                   {"same", same},
                                   {"added", leaf_list(added)},
                                   {"removed", leaf_list(removed)},
                                   {"changed", std::move(ch)},
                                   {"unchanged", unchanged},
                                   {"tree_same", tree_same},
                                   {"metadata", values(meta)},
                                   {"job", values(job)}});
    return same ? exit_ok : exit_fail;
  }

  if (same) {
    std::printf("%s and %s: %s (%llu leaves, metadata and job equal)\n", ca.path.string().c_str(),
                cb.path.string().c_str(), green("same").c_str(),
                static_cast<unsigned long long>(unchanged));
    return exit_ok;
  }
  std::printf("%s and %s: %s\n", ca.path.string().c_str(), cb.path.string().c_str(),
              red("different").c_str());
  if (!added.empty() || !removed.empty() || !changed.empty()) {
    table t({"", "LEAF", "DIFFERENCE"});
    for (const auto* le : removed)
      t.add(
          {red("-"), le->path, std::string(dtype_name(le->dtype)) + " " + shape_string(le->shape)});
    for (const auto* le : added)
      t.add({green("+"), le->path,
             std::string(dtype_name(le->dtype)) + " " + shape_string(le->shape)});
    for (const auto& c : changed) {
      std::string d;
      if (c.dtype)
        d += "dtype " + std::string(dtype_name(c.a->dtype)) + " -> " +
             std::string(dtype_name(c.b->dtype));
      if (c.shape) {
        if (!d.empty()) d += ", ";
        d += "shape " + shape_string(c.a->shape) + " -> " + shape_string(c.b->shape);
      }
      if (!c.dtype && !c.shape) {
        d = "data";
        if (c.chunks_differing)
          d += " (" + std::to_string(*c.chunks_differing) + " of " +
               std::to_string(c.a->chunks.size()) + " chunks differ)";
      }
      t.add({yellow("~"), c.path, d});
    }
    t.print(stdout, "  ");
  }
  auto print_values = [](const char* what, const std::vector<value_change>& v) {
    if (v.empty()) return;
    table t({"", std::string(what), "A", "B"});
    for (const auto& c : v) {
      t.add({c.a && c.b ? yellow("~")
             : c.a      ? red("-")
                        : green("+"),
             c.key, show_value(c.a), show_value(c.b)});
    }
    t.print(stdout, "  ");
  };
  if (!tree_same && added.empty() && removed.empty() && changed.empty()) {
    std::printf("  the trees differ in None nodes or empty dicts/lists\n");
  }
  print_values("METADATA", meta);
  print_values("JOB", job);
  std::printf("%zu added, %zu removed, %zu changed, %llu unchanged leaves\n", added.size(),
              removed.size(), changed.size(), static_cast<unsigned long long>(unchanged));
  return exit_fail;
}

}  // namespace ckpt::inspect
