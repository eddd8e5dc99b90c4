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

/// Touches and frees about `bytes` of memory so that later allocations of fresh pages run at
/// memory speed on VMs that hand freed memory back to the host (WORKLOADS.md). Untimed.
void prefault(std::uint64_t bytes);

/// Peak-RSS tracking: reset the high-water mark (Linux clear_refs), then read VmHWM.
bool reset_peak_rss();
std::uint64_t peak_rss_bytes();

/// A tree like `t` whose leaves are fresh writable buffers (pre-touched), for restores into
/// existing memory.
tree destination_like(const tree& t);

}  // namespace ckpt::perf
