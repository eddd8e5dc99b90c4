// What the sharded save and load share (internal): a slice as a box, the check of a leaf as a
// rank passes it, the creation time of a COMMIT.
#pragma once

#include "format/sharded.hpp"

#include <ckpt/shard.hpp>

#include <cstdint>

namespace ckpt::shard_detail {

format::box to_box(const slice& s);
/// Checks one leaf as this rank passes it: path, shape, slices inside the global shape and not
/// overlapping one another, data matching each slice (`need_bytes`: a save needs real bytes).
result<void> check_leaf(const sharded_leaf& l, bool need_bytes);
/// Nanoseconds since the Unix epoch (COMMIT's created_unix_ns).
std::uint64_t unix_ns();

}  // namespace ckpt::shard_detail
