// A save's write units: packing and encoding (save_units.hpp).
#include "pipeline/save_units.hpp"

#include "pipeline/extents.hpp"

#include <algorithm>
#include <cstring>
#include <optional>

namespace ckpt::pipeline {

namespace {

// The chunk's entry once its stored bytes are final: sizes, codec and checksum (the scan's for
// a raw chunk without fill runs, whose stored bytes are its raw bytes, when it has one).
void record_chunk(format::index& ix, const piece& pc, format::codec c, std::uint64_t stored,
                  std::span<const std::byte> stored_bytes, std::optional<std::uint64_t> raw_xxh3) {
  auto& ce = ix.leaves[pc.leaf].chunks[pc.chunk];
  ce.raw_size = pc.raw_size;
  ce.stored_size = stored;
  ce.codec = c;
  ce.xxh3 = c == format::codec::raw && ce.runs.empty() && raw_xxh3 ? *raw_xxh3
                                                                   : format::checksum(stored_bytes);
}

}  // namespace

// Units: with `capture`, borrowed/owned leaves first (they gate `staged`), then shared ones;
// without, every leaf in one uncaptured group. Within each group, pieces (chunks, split at
// element boundaries) are packed greedily in tree order into units of at most `cb` bytes.
std::vector<unit> pack_units(const std::vector<flat_leaf>& leaves, std::uint64_t cb, bool capture) {
  std::vector<unit> units;
  for (int pass = capture ? 0 : 1; pass < 2; ++pass) {
    const bool capture_pass = pass == 0;
    unit cur;
    cur.needs_capture = capture_pass;
    auto flush = [&] {
      if (!cur.pieces.empty()) units.push_back(std::move(cur));
      cur = unit{};
      cur.needs_capture = capture_pass;
    };
    for (std::size_t i = 0; i < leaves.size(); ++i) {
      const auto& a = leaves[i].array;
      const bool is_shared = a.ownership() == ownership::shared;
      if (capture && is_shared == capture_pass) continue;
      const std::uint64_t es = dtype_size(a.dtype());
      const std::uint64_t step = std::max<std::uint64_t>(es, cb / es * es);
      std::uint64_t off = 0;
      std::uint32_t ci = 0;
      while (off < a.num_bytes()) {
        std::uint64_t n = std::min(step, a.num_bytes() - off);
        if (cur.raw_bytes + n > cb) flush();
        cur.pieces.push_back({static_cast<std::uint32_t>(i), ci++, off, n});
        cur.raw_bytes += n;
        off += n;
      }
    }
    flush();
  }
  return units;
}

// The staging buffer of one uncaptured write unit: its encoded bytes at worst, padded for
// O_DIRECT.
std::uint64_t save_slab_bytes(std::uint64_t chunk_bytes) {
  return detail::buffer_pool::size_class(
      align_up(format::encode_bound(std::max<std::uint64_t>(chunk_bytes, 4096)), io_align) +
      io_align);
}

unsigned auto_data_files(std::uint64_t bytes) {
  constexpr std::uint64_t per_file = 64ull << 20;
  return static_cast<unsigned>(std::clamp<std::uint64_t>((bytes + per_file - 1) / per_file, 1, 4));
}

// The staging bytes a unit holds: a captured unit is encoded in place and never outgrows its
// raw bytes (padded), an uncaptured one may need room for a compressed piece's worst case.
std::uint64_t unit_buffer_bytes(const unit& u, std::uint64_t slab_bytes) {
  return u.needs_capture ? detail::buffer_pool::size_class(align_up(u.raw_bytes, io_align))
                         : slab_bytes;
}

detail::tracked_save look_at_leaves(detail::write_tracker* wt, const std::vector<flat_leaf>& leaves,
                                    std::vector<unit>& units) {
  if (!wt) return {};
  std::vector<const std::byte*> at(leaves.size(), nullptr);
  for (std::size_t i = 0; i < leaves.size(); ++i) {
    const auto b = leaves[i].array.bytes();
    if (b.size() >= detail::track_min && wt->look(b)) at[i] = b.data();
  }
  for (auto& u : units) {
    for (auto& pc : u.pieces)
      if (at[pc.leaf]) pc.memo = at[pc.leaf] + pc.raw_offset;
  }
  return {wt, wt->epoch()};
}

namespace {
// A hash computed from a looked-at leaf's bytes (or from their copy), for the next save.
void remember_hash(const detail::tracked_save& ts, const piece& pc, const format::chunk_entry& ce) {
  if (ts.tracker && pc.memo && ce.hashed)
    ts.tracker->remember(pc.memo, pc.raw_size, ce.hash, ts.epoch);
}
}  // namespace

// A differential save's test of one piece against the base's chunk: hashes the raw bytes (or
// takes the hash a tracking runtime still holds; recorded either way) and marks the piece shared
// when they are the base's. (Hash alone: in a fine-tuning save most chunks are unchanged, and a
// checksum of those would be wasted.)
bool same_as_base(format::index& ix, piece& pc, std::span<const std::byte> raw,
                  const detail::tracked_save& ts) {
  if (!pc.base) return false;
  auto& ce = ix.leaves[pc.leaf].chunks[pc.chunk];
  std::optional<format::raw_hash> known;
  if (ts.tracker && pc.memo) known = ts.tracker->known(pc.memo, pc.raw_size);
  pc.known = known.has_value();
  ce.hash = known ? *known : format::hash128(raw);
  ce.hashed = true;
  if (!known) remember_hash(ts, pc, ce);
  pc.shared = ce.hash == pc.base->hash;
  return pc.shared;
}

namespace {

// One pass over a piece's raw bytes (format::scan_chunk): its fill runs when the save
// compresses and they cover at least an eighth of it (below that, gathering the rest costs more
// than the bytes it saves; docs/FORMAT.md "Fill runs"), its hash when the save records one and
// it is not known yet, and the checksum of the raw bytes when the scan completed it.
std::optional<std::uint64_t> scan_piece(format::chunk_entry& ce, std::span<const std::byte> raw,
                                        std::size_t es, const format::codec_policy& policy,
                                        bool hash) {
  const bool want_hash = hash && !ce.hashed;
  auto sc = format::scan_chunk(raw, es, policy.compress, want_hash);
  if (want_hash) {
    ce.hash = sc.hash;
    ce.hashed = true;
  }
  ce.runs = std::move(sc.runs);
  if (format::run_bytes(ce.runs) * 8 < raw.size()) ce.runs.clear();
  if (!sc.xxh3_known) return std::nullopt;
  return sc.xxh3;
}

// Encodes `rest` with `c` into `dst` (which may be rest.data()) through a per-thread scratch
// buffer; 0 when compression does not pay (the caller stores it raw).
std::size_t encode_through_scratch(format::codec c, std::span<const std::byte> rest, std::size_t es,
                                   const format::codec_policy& policy, std::byte* dst) {
  thread_local std::vector<std::byte> scratch;
  if (scratch.size() < format::encode_bound(rest.size())) {
    scratch.resize(format::encode_bound(rest.size()));
  }
  std::size_t stored = format::encode_chunk(c, rest, es, scratch, policy.min_ratio);
  if (stored > rest.size()) stored = 0;  // (min_ratio < 1) must not outgrow its slot
  if (stored) std::memcpy(dst, scratch.data(), stored);
  return stored;
}

}  // namespace

// A captured unit is encoded in place: pieces are compacted towards the front, and since the
// stored cursor never passes the raw one and a piece's stored bytes (its rest after fill runs,
// compressed or not) are never more than its raw bytes, writing piece p never touches the raw
// bytes of a later piece.
void encode_captured(unit& un, const std::vector<flat_leaf>& leaves, format::index& ix,
                     const format::codec_policy& policy, bool hash, aligned_buffer& buf,
                     const detail::tracked_save& ts) {
  std::byte* base = buf.data();
  std::uint64_t cursor = 0, raw_cursor = 0;
  for (std::size_t p = 0; p < un.pieces.size(); ++p) {
    const piece& pc = un.pieces[p];
    if (pc.shared) continue;  // (never captured)
    const ckpt::array& a = leaves[pc.leaf].array;
    auto& ce = ix.leaves[pc.leaf].chunks[pc.chunk];
    const std::span<const std::byte> raw(base + raw_cursor, pc.raw_size);
    raw_cursor += pc.raw_size;
    const std::size_t es = dtype_size(a.dtype());
    const auto raw_xxh3 = scan_piece(ce, raw, es, policy, hash);
    remember_hash(ts, pc, ce);
    std::span<const std::byte> rest = raw;
    if (!ce.runs.empty()) rest = {base + cursor, format::gather_rest(raw, ce.runs, base + cursor)};
    format::codec c = format::choose_codec(rest, es, is_floating(a.dtype()), policy);
    std::size_t stored = 0;
    if (c != format::codec::raw)
      stored = encode_through_scratch(c, rest, es, policy, base + cursor);
    if (stored == 0) {
      c = format::codec::raw;
      if (base + cursor != rest.data()) std::memmove(base + cursor, rest.data(), rest.size());
      stored = rest.size();
    }
    record_chunk(ix, pc, c, stored, {base + cursor, stored}, raw_xxh3);
    un.rel_offsets[p] = cursor;
    cursor += stored;
  }
  // O_DIRECT pads every unit to the alignment; the padding is zeros.
  const std::uint64_t padded = align_up(cursor, io_align);
  std::memset(base + cursor, 0, padded - cursor);
  buf.resize(padded);
  un.extent = padded;
  un.out = {{0, buf.span(), false}};
}

// An uncaptured unit: raw pieces that start page-aligned in the leaf's memory are written from
// there (their whole pages; a partial last page is copied into the staging buffer, where the
// next pieces follow it); everything else is encoded or copied into the staging buffer, taken
// only when a piece needs it. Before each write from the leaf's memory the staging run so far
// is closed with zero padding, so that every write starts and ends aligned.
void encode_uncaptured(unit& un, const std::vector<flat_leaf>& leaves, format::index& ix,
                       const format::codec_policy& policy, bool hash, aligned_buffer& buf,
                       detail::buffer_pool& pool, std::size_t slab_bytes,
                       const detail::tracked_save& ts) {
  std::uint64_t cursor = 0;     // unit-relative file position
  std::uint64_t fill = 0;       // bytes used in `buf`
  std::uint64_t run_rel = 0;    // file position of buf's open run
  std::uint64_t run_start = 0;  // where in buf that run starts
  bool run_open = false;
  auto staging = [&]() -> std::byte* {
    if (buf.capacity() == 0) buf = pool.take(slab_bytes);
    if (!run_open) {
      run_open = true;
      run_rel = cursor;
      run_start = fill;
    }
    return buf.data() + fill;
  };
  auto close_run = [&] {
    if (!run_open) return;
    const std::uint64_t padded = align_up(fill, io_align);
    std::memset(buf.data() + fill, 0, padded - fill);
    un.out.push_back(
        {run_rel, std::span<const std::byte>(buf.data() + run_start, padded - run_start)});
    cursor = run_rel + (padded - run_start);
    fill = padded;
    run_open = false;
  };
  for (std::size_t p = 0; p < un.pieces.size(); ++p) {
    piece& pc = un.pieces[p];
    const ckpt::array& a = leaves[pc.leaf].array;
    const std::span<const std::byte> src = a.bytes().subspan(pc.raw_offset, pc.raw_size);
    // Compared with the base first: an unchanged chunk costs one hash pass, no codec choice.
    if (same_as_base(ix, pc, src, ts)) continue;
    const std::size_t es = dtype_size(a.dtype());
    auto& ce = ix.leaves[pc.leaf].chunks[pc.chunk];
    const auto raw_xxh3 = scan_piece(ce, src, es, policy, hash);
    remember_hash(ts, pc, ce);
    if (format::run_bytes(ce.runs) == src.size()) {  // fill runs only: nothing stored
      record_chunk(ix, pc, format::codec::raw, 0, {}, raw_xxh3);
      un.rel_offsets[p] = cursor;
      continue;
    }
    // With fill runs, the rest is gathered into the staging buffer and encoded there.
    std::span<const std::byte> rest = src;
    if (!ce.runs.empty()) {
      std::byte* at = staging();
      rest = {at, format::gather_rest(src, ce.runs, at)};
    }
    format::codec c = format::choose_codec(rest, es, is_floating(a.dtype()), policy);
    const bool direct = ce.runs.empty() && c == format::codec::raw && src.size() >= direct_min &&
                        reinterpret_cast<std::uintptr_t>(src.data()) % io_align == 0;
    if (direct) {
      close_run();
      const std::uint64_t whole = src.size() / io_align * io_align;
      un.out.push_back({cursor, src.first(whole), true});
      record_chunk(ix, pc, c, src.size(), src, raw_xxh3);
      un.rel_offsets[p] = cursor;
      cursor += whole;
      if (whole < src.size()) {
        std::byte* dst = staging();
        std::memcpy(dst, src.data() + whole, src.size() - whole);
        fill += src.size() - whole;
        cursor += src.size() - whole;
      }
      continue;
    }
    std::byte* dst = staging();
    const std::uint64_t room = buf.capacity() - fill;
    std::size_t stored = 0;
    if (c != format::codec::raw && rest.data() == dst) {
      stored = encode_through_scratch(c, rest, es, policy, dst);
    } else if (c != format::codec::raw && room >= format::encode_bound(rest.size())) {
      stored = format::encode_chunk(c, rest, es, {dst, static_cast<std::size_t>(room)},
                                    policy.min_ratio);
      if (stored > rest.size()) stored = 0;  // (min_ratio < 1): raw is what always fits
    }
    if (stored == 0) {
      c = format::codec::raw;
      if (rest.data() != dst) std::memcpy(dst, rest.data(), rest.size());
      stored = rest.size();
    }
    record_chunk(ix, pc, c, stored, {dst, stored}, raw_xxh3);
    un.rel_offsets[p] = cursor;
    fill += stored;
    cursor += stored;
  }
  close_run();
  un.extent = cursor;
}

}  // namespace ckpt::pipeline
