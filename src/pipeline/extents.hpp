// What load and verify share below the small files: the data files opened and sized against the
// index, and the extent planner that turns chunks into aligned reads. Internal header.
#pragma once

#include "checkpoint/files.hpp"
#include "format/index.hpp"

#include <ckpt/buffer.hpp>
#include <ckpt/io.hpp>

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <functional>
#include <span>
#include <system_error>
#include <vector>

namespace ckpt::pipeline {

inline constexpr std::size_t io_align = 4096;
/// Bytes of neighbouring chunks merged into one read, as large as the saves' write units. On the
/// reference VM (max_sectors_kb 4096) fio reads 4 MiB x32 faster than 8 MiB x16, and a small
/// load with 4 MiB extents ran 0.82 GiB/s against 0.78 with 8 MiB (6 alternated fresh runs).
inline constexpr std::uint64_t max_extent = 4ull << 20;
inline constexpr std::uint64_t max_gap = 256ull << 10;  ///< unneeded bytes read to merge two
/// The smallest raw chunk that a save writes from the leaf's memory and a load reads straight
/// into its destination (smaller ones go through staging buffers, packed with their neighbours).
inline constexpr std::uint64_t direct_min = aligned_buffer::page_aligned_min;
/// Bytes of reads or writes one streaming save or load keeps in flight: enough to keep the
/// disk's queue full, little next to the tree (the runtime's staging budget when smaller).
inline constexpr std::uint64_t stream_window = 128ull << 20;

/// Chunks [first_chunk, end_chunk) of leaf `leaf` (all of them by default).
struct selection {
  std::uint32_t leaf;
  std::uint32_t first_chunk = 0;
  std::uint32_t end_chunk = UINT32_MAX;
};

/// One chunk of an extent: chunk `chunk` of selection `sel`.
struct chunk_ref {
  std::uint32_t sel;
  std::uint32_t chunk;
};

/// One aligned read covering one or more chunks of one file.
struct extent {
  std::uint32_t file;
  std::uint64_t start;   ///< aligned
  std::uint64_t length;  ///< aligned
  std::vector<chunk_ref> chunks;
};

/// The selected chunks as extents: sorted by offset per file, merged across gaps of at most
/// max_gap up to max_extent, files interleaved so that reads proceed on all of them at once.
/// Chunks of files not `readable` (when given) are left out; chunks `alone` says true for get
/// an extent of their own. A chunk that stores nothing (fill runs only) gets an extent of
/// length 0 of its own, at the end: nothing to read, only to decode.
std::vector<extent> plan_extents(const format::index& ix, std::span<const selection> sels,
                                 const std::vector<bool>* readable = nullptr,
                                 const std::function<bool(const chunk_ref&)>& alone = {});

/// Every selected chunk of every leaf.
std::vector<selection> all_leaves(const format::index& ix);

/// A data-file problem: the file's index, a code and a message without the file's name.
using file_problem = std::function<void(std::uint32_t file, std::error_code, std::string)>;

/// Opens the data files marked in `needed` (all when empty) below `cf.dir` and checks that each
/// one holds at least the size the index records (a longer file is allowed, FORMAT.md). Problems go
/// to `problem`; with `stop_at_first` nothing more is opened after one. Returns one entry per index
/// file (fd -1 where not opened); the caller closes them (close_files).
boost::asio::awaitable<std::vector<io::file>> open_data_files(
    io::engine& io, const checkpoint::checkpoint_files& cf, const format::index& ix,
    const std::vector<bool>& needed, bool direct, bool stop_at_first, const file_problem& problem);

boost::asio::awaitable<void> close_files(io::engine& io, std::vector<io::file>& files);

}  // namespace ckpt::pipeline
