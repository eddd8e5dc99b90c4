// Ranged reads of leaves of one checkpoint (internal): only the chunks overlapping a byte range
// of a leaf are read, checksummed and decoded, and handed to a sink. The sharded loader builds
// on it (shard/load.cpp); load.cpp implements it with the load pipeline's validation and reader.
// Also is_committed's check as a coroutine, for the store's awaitable functions.
#pragma once

#include <ckpt/array.hpp>
#include <ckpt/error.hpp>
#include <ckpt/io.hpp>
#include <ckpt/load.hpp>
#include <ckpt/runtime.hpp>

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ckpt::detail {

struct range_read {
  std::string leaf;     ///< the leaf's path in the checkpoint
  ckpt::dtype dtype{};  ///< expected dtype and shape: a checkpoint that differs is corrupt
  ckpt::shape shape;
  std::uint64_t begin = 0;  ///< raw byte range of the leaf that is needed
  std::uint64_t end = 0;
  /// Receives, for every chunk overlapping [begin, end), the chunk's raw bytes, which start at
  /// byte `offset` of the leaf. Runs on the runtime's CPU pool, concurrently for different
  /// chunks; the span is valid during the call only.
  std::function<void(std::uint64_t offset, std::span<const std::byte> raw)> sink;
  /// Instead of a sink: the whole leaf (begin 0, end its byte size) goes into `dest`, its bytes
  /// in the leaf's own C order, as a load fills a template: raw page-aligned chunks are read
  /// straight into it, the others decoded into it. Empty: the sink gets the chunks.
  std::span<std::byte> dest;
};

/// The expected size and checksum of a checkpoint's COMMIT file (a sharded index records its
/// ranks' commit markers so that a swapped rank directory is caught).
struct expected_commit {
  std::uint64_t bytes = 0;
  std::uint64_t xxh3 = 0;
};

/// A checkpoint validated for ranged reads (opaque; see load.cpp).
struct ranged_checkpoint;

/// Validates the checkpoint at `dir` like a load does (commit marker, index, data file sizes,
/// and `commit` when given) and checks that each read's leaf exists with the expected dtype and
/// shape. Touches no sink; the result owns `reads`. Runs on (and must be awaited from) `rt`'s
/// pipeline executor.
boost::asio::awaitable<result<std::shared_ptr<ranged_checkpoint>>> open_for_ranges(
    std::shared_ptr<runtime> rt, std::filesystem::path dir, std::optional<expected_commit> commit,
    std::vector<range_read> reads);

/// Reads the chunks that the reads given to open_for_ranges need and feeds their sinks; every
/// chunk's checksum is verified (unless options say otherwise) before it is decoded.
boost::asio::awaitable<result<void>> read_ranges(std::shared_ptr<runtime> rt,
                                                 std::shared_ptr<ranged_checkpoint> ck,
                                                 load_options options);

/// ckpt::is_committed(path) as a coroutine on `io`'s engine (awaited from one of its threads).
boost::asio::awaitable<result<bool>> committed(io::engine& io, std::filesystem::path path);

}  // namespace ckpt::detail
