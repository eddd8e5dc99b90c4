// A save's write units: the tree's chunks packed into units, and the encoding of a unit into
// its aligned writes (codec choice, compression, checksums, hashes). The save pipeline
// (save.cpp) schedules units; this is what one unit's encode and capture steps do. Internal
// header.
#pragma once

#include "format/codec.hpp"
#include "format/index.hpp"
#include "pipeline/buffer_pool.hpp"
#include "pipeline/write_tracker.hpp"

#include <ckpt/tree.hpp>

#include <cstdint>
#include <span>
#include <vector>

namespace ckpt::pipeline {

// One chunk of one leaf: bytes [raw_offset, raw_offset + raw_size) of leaf `leaf`.
struct piece {
  std::uint32_t leaf = 0;
  std::uint32_t chunk = 0;  // index into the leaf's chunk list
  std::uint64_t raw_offset = 0;
  std::uint64_t raw_size = 0;
  // A differential save: the base's chunk at the same place (same leaf path, dtype and raw
  // range), and whether this piece's bytes hashed equal to it (then nothing is written).
  const format::chunk_entry* base = nullptr;
  bool shared = false;
  // A tracking runtime (runtime_options::track_writes): where the piece's bytes are in a leaf
  // the save looked at (its hash may be known, and is remembered), and whether its hash came
  // from the tracker (then its bytes were not read at all).
  const std::byte* memo = nullptr;
  bool known = false;
};

// One aligned write of a unit: `bytes` at `rel` bytes into the unit's place in its data file.
struct segment {
  std::uint64_t rel = 0;
  std::span<const std::byte> bytes;
  bool from_leaf = false;  // the leaf's own memory, not a staging buffer
};

// A write unit: pieces laid out back to back in one data file region and written with a few
// aligned writes. A captured unit is one staging buffer; an uncaptured one (shared leaves, or a
// save whose caller waits for the commit) writes each raw, page-aligned piece straight from the
// leaf's memory and only the rest (small or compressed pieces, unaligned tails) from a staging
// buffer, taken when first needed.
struct unit {
  std::vector<piece> pieces;
  std::uint64_t raw_bytes = 0;
  bool needs_capture = false;  // holds borrowed/owned bytes: copied to staging before staged
  // Filled by encode_unit:
  std::vector<std::uint64_t> rel_offsets;  // of each piece's stored bytes within the unit
  std::uint64_t extent = 0;                // bytes the unit takes in its file (padded)
  std::vector<segment> out;                // its writes, covering [0, extent)
};

/// Units: with `capture`, borrowed/owned leaves first (they gate `staged`), then shared ones;
/// without, every leaf in one uncaptured group. Within each group, pieces (chunks, split at
/// element boundaries) are packed greedily in tree order into units of at most `cb` bytes.
std::vector<unit> pack_units(const std::vector<flat_leaf>& leaves, std::uint64_t cb, bool capture);

/// The staging buffer of one uncaptured write unit: its encoded bytes at worst, padded for
/// O_DIRECT.
std::uint64_t save_slab_bytes(std::uint64_t chunk_bytes);

/// How many data files a save of `bytes` (its units, padded) writes when save_options::data_files
/// is 0: one per 64 MiB, at least 1, at most 4.
unsigned auto_data_files(std::uint64_t bytes);

/// The staging bytes a unit holds: a captured unit is encoded in place and never outgrows its
/// raw bytes (padded), an uncaptured one may need room for a compressed piece's worst case.
std::uint64_t unit_buffer_bytes(const unit& u, std::uint64_t slab_bytes);

/// A tracking runtime's save (`wt` not null): looks at the leaves of at least
/// detail::track_min bytes and points their pieces at their bytes (piece::memo).
detail::tracked_save look_at_leaves(detail::write_tracker* wt, const std::vector<flat_leaf>& leaves,
                                    std::vector<unit>& units);

/// A differential save's test of one piece against the base's chunk: hashes the raw bytes (or
/// takes the hash the write tracker still holds for them) and records it either way, and marks
/// the piece shared when they are the base's. `ts.tracker` may be null.
bool same_as_base(format::index& ix, piece& pc, std::span<const std::byte> raw,
                  const detail::tracked_save& ts);

/// Encodes a captured unit in place in `buf` (its raw bytes back to back) into one write.
void encode_captured(unit& un, const std::vector<flat_leaf>& leaves, format::index& ix,
                     const format::codec_policy& policy, bool hash, aligned_buffer& buf,
                     const detail::tracked_save& ts);

/// Encodes an uncaptured unit: raw page-aligned pieces are written from the leaf's memory, the
/// rest from a staging buffer taken from `pool` (`slab_bytes`) when first needed.
void encode_uncaptured(unit& un, const std::vector<flat_leaf>& leaves, format::index& ix,
                       const format::codec_policy& policy, bool hash, aligned_buffer& buf,
                       detail::buffer_pool& pool, std::size_t slab_bytes,
                       const detail::tracked_save& ts);

}  // namespace ckpt::pipeline
