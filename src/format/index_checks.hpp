// The index parser's cross checks (index_checks.cpp). Internal header.
#pragma once

#include "format/index.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace ckpt::format::detail {

/// How messages name leaves[i]: `leaf 3 "params/w"` (the path once it is known).
std::string leaf_name(const std::vector<leaf_entry>& leaves, std::size_t i);

/// After the walk: no file listed twice; every chunk inside its file and no two chunks of a
/// file overlapping (`total_chunks` of them). Errors are errc::corrupt naming index.json.
result<void> check_extents(const index& ix, std::uint64_t total_chunks);

/// Dict keys unique; each leaf's path the one its place in the tree implies (the tree's leaf
/// count must equal ix.leaves.size()).
result<void> check_tree(const index& ix);

}  // namespace ckpt::format::detail
