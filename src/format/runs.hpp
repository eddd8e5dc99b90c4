// Fill runs (format 1.2): stretches of a chunk's raw bytes that are one value repeated (zeros
// most often), recorded in the index instead of stored. docs/FORMAT.md "Fill runs". Internal
// header.
#pragma once

#include <ckpt/error.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace ckpt::format {

/// Raw bytes [start, start + length) of a chunk are one value of `width` bytes repeated: the
/// value's bytes in memory order are the low `width` bytes of `fill` (little-endian). `width`
/// 0 is a run of zeros (recorded without a value); otherwise it is the leaf's element size.
struct fill_run {
  std::uint64_t start = 0;
  std::uint64_t length = 0;
  std::uint64_t fill = 0;
  std::uint8_t width = 0;
  friend bool operator==(const fill_run&, const fill_run&) = default;
};

/// The granularity at which the writer looks for runs: whole 4 KiB pages of the chunk.
inline constexpr std::size_t run_page = 4096;

/// Appends to `runs` the pages of `raw` (relative to its start; a partial last page never)
/// that hold one value of `element_size` (1, 2, 4 or 8) bytes repeated, as runs at `offset` +
/// their place in `raw`, merged with each other and with the last run of `runs` where they
/// continue it with the same value. Costs a compare or two per page of data that has none, a
/// pass at memory speed over pages that are runs.
void find_runs(std::span<const std::byte> raw, std::size_t element_size, std::uint64_t offset,
               std::vector<fill_run>& runs);

/// Bytes the runs cover.
std::uint64_t run_bytes(std::span<const fill_run> runs) noexcept;

/// Copies the bytes of `raw` outside `runs` to `dst` back to back (dst.size() >= raw.size() -
/// run_bytes(runs)); returns that size. `dst` may be `raw.data()` itself or lie before it (the
/// copy runs forwards).
std::size_t gather_rest(std::span<const std::byte> raw, std::span<const fill_run> runs,
                        std::byte* dst) noexcept;

/// The inverse in place: `chunk` holds the rest (chunk.size() - run_bytes(runs) bytes) at its
/// front; moves each part to its place and fills the runs with their values.
void scatter_rest(std::span<std::byte> chunk, std::span<const fill_run> runs,
                  std::size_t element_size) noexcept;

/// Checks a chunk's runs against its raw size and element size: in order, not overlapping,
/// inside the chunk, not empty, at element boundaries, fill values of element size (`es` 0:
/// order and bounds only). The error says what is wrong (the caller adds where).
result<void> check_runs(std::span<const fill_run> runs, std::uint64_t raw_size, std::size_t es);

}  // namespace ckpt::format
