// The benchmark trees of WORKLOADS.md (dense, sparse, small, bf16), generated deterministically.
#pragma once

#include <ckpt/tree.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt::perf {

inline constexpr std::string_view workload_names[] = {"dense", "sparse", "small", "bf16"};

/// Builds workload `name` with owned leaves. Untimed; uses every core. Errors on unknown names.
result<tree> make_workload(std::string_view name, std::uint64_t seed = 20261128);

/// `bytes` (a multiple of 4) of N(0, 0.02) float32 values, for the synthetic sweep trees.
aligned_buffer gaussian_f32(std::uint64_t bytes, std::uint64_t seed = 7);
/// A tree of `leaves` f32 leaves (borrowed views into `pool`, which must hold `total_bytes`)
/// of equal size (the last takes the remainder), in dicts of at most 1000 leaves.
tree gaussian_tree(const aligned_buffer& pool, std::uint64_t total_bytes, std::uint64_t leaves);

/// Touches and frees about `bytes` of memory so that later allocations of fresh pages run at
/// memory speed on VMs that hand freed memory back to the host (WORKLOADS.md). Untimed.
void prefault(std::uint64_t bytes);

/// Peak-RSS tracking: reset the high-water mark (Linux clear_refs), then read VmHWM.
bool reset_peak_rss();
std::uint64_t peak_rss_bytes();
/// The resident set now (VmRSS).
std::uint64_t rss_bytes();

/// A tree like `t` whose leaves are fresh writable buffers (pre-touched), for restores into
/// existing memory.
tree destination_like(const tree& t);

}  // namespace ckpt::perf
