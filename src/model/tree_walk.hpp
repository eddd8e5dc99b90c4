// The one walk over a tree's leaves with their paths (tree::flatten() is built on it), for
// callers that need the paths but not copies of the leaves: copying 20,000 arrays (a shape
// vector and an owner count each) was most of a template load's listing of its leaves.
#pragma once

#include <ckpt/tree.hpp>

#include <string>
#include <string_view>
#include <utility>

namespace ckpt::detail {

/// Calls f(path, leaf) for each leaf of `t` in tree::flatten()'s order; `path` (the prefix
/// `path` holds on entry, then the leaf's escaped path) is valid during the call only.
template <class F>
void for_each_leaf_path(const tree& t, std::string& path, F& f) {
  auto child = [&](std::string_view component, const tree& c) {
    const std::size_t mark = path.size();
    if (!path.empty()) path += '/';
    path += component;
    for_each_leaf_path(c, path, f);
    path.resize(mark);
  };
  switch (t.type()) {
    case tree::kind::none:
      return;
    case tree::kind::leaf:
      f(std::as_const(path), t.leaf());
      return;
    case tree::kind::dict:
      for (const auto& [k, v] : t.items())
        child(escape_key(k), v);
      return;
    case tree::kind::list:
      for (std::size_t i = 0; i < t.elements().size(); ++i)
        child(std::to_string(i), t.elements()[i]);
      return;
  }
}

template <class F>
void for_each_leaf_path(const tree& t, F&& f) {
  std::string path;
  for_each_leaf_path(t, path, f);
}

}  // namespace ckpt::detail
