// The index parser's cross checks (index_checks.cpp). Internal header.
#pragma once

#include "format/index.hpp"

#include <cstdint>
#include <string>
#include <string_view>
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

/// The cap messages, one wording for the parser and the writer's check.
std::string too_deep(std::uint32_t max_depth);
std::string key_too_long(std::string_view key, std::uint32_t max_key_bytes);
std::string rank_too_high(const std::string& leaf, std::uint32_t max_rank);
std::string too_many(std::uint64_t max, std::string_view what);

}  // namespace ckpt::format::detail
