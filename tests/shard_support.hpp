// Global arrays for the sharded-checkpoint tests (test_shard.cpp and the MPI program
// mpi_shard_test.cpp): a fixed set of leaves with deterministic bytes, a reference slicer
// (element by element, independent of the library's copy code), and the slicings each rank
// saves or loads with.
#pragma once

#include "io/backend.hpp"
#include "support.hpp"

#include <ckpt/shard.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace ckpt::test {

/// An IO backend that fails every write after the first `ok` ones with EIO: a rank whose save
/// fails part-way.
class failing_writes final : public ckpt::io::backend {
 public:
  explicit failing_writes(std::unique_ptr<ckpt::io::backend> inner, int ok = 1)
      : inner_(std::move(inner)), ok_(ok) {}
  std::string_view name() const noexcept override { return "failing"; }
  void submit(ckpt::io::op* o) noexcept override {
    if (o->req.kind == ckpt::io::op_kind::write && writes_++ >= ok_) {
      o->complete(-EIO);
      return;
    }
    inner_->submit(o);
  }
  void shutdown() noexcept override { inner_->shutdown(); }

 private:
  std::unique_ptr<ckpt::io::backend> inner_;
  const int ok_;
  std::atomic<int> writes_{0};
};

struct global_leaf {
  std::string path;
  ckpt::dtype dtype;
  ckpt::shape shape;
  std::vector<std::uint8_t> bytes;
};

/// The leaves every sharded test saves: uneven, 3-D, 2-D grid, replicated, scalar, empty,
/// compressible, and a key holding '/' (escaped in paths).
inline std::vector<global_leaf> make_globals(std::uint64_t seed = 1) {
  std::vector<global_leaf> g = {
      {"params/w", dtype::f32, {1001, 64}, {}},  // 1001 rows: uneven splits by 2, 3, 4
      {"params/b", dtype::f32, {64}, {}},        // replicated
      {"params/emb", dtype::bf16, {97, 33, 5}, {}},
      {"opt/m", dtype::f64, {128, 258}, {}},
      {"step", dtype::i64, {}, {}},            // replicated scalar
      {"empty", dtype::f32, {0, 8}, {}},       // no bytes
      {"sparse", dtype::f32, {512, 300}, {}},  // mostly zeros: LZ4 chunks
      {"a~1b/c", dtype::u8, {37}, {}},         // a key "a/b"
      {"runs", dtype::f32, {96, 1024}, {}},    // 4 KiB rows, most zero or 1.5: fill runs
  };
  for (std::size_t i = 0; i < g.size(); ++i) {
    const auto n = byte_size(g[i].dtype, g[i].shape).value();
    g[i].bytes = random_bytes(n, seed * 1000 + i);
    if (g[i].path == "sparse") {
      for (std::size_t b = 0; b < n; ++b)
        if ((b / 4) % 97 != 0) g[i].bytes[b] = 0;
    }
    if (g[i].path == "runs") {
      // Rows of zeros and rows of 1.5f, in runs of several rows, and some random rows.
      const float one_and_half = 1.5f;
      for (std::size_t row = 0; row < 96; ++row) {
        const std::size_t kind = (row / 5 + row % 3) % 4;  // 0, 1: zero; 2: 1.5; 3: random
        for (std::size_t e = 0; kind != 3 && e < 1024; ++e) {
          if (kind == 2) {
            std::memcpy(&g[i].bytes[(row * 1024 + e) * 4], &one_and_half, 4);
          } else {
            std::memset(&g[i].bytes[(row * 1024 + e) * 4], 0, 4);
          }
        }
      }
    }
  }
  return g;
}

/// The bytes of `s` of `g`, element by element (reference implementation).
inline std::vector<std::uint8_t> extract(const global_leaf& g, const slice& s) {
  const std::size_t es = dtype_size(g.dtype);
  const std::size_t n = g.shape.size();
  std::vector<std::uint8_t> out(byte_size(g.dtype, s.extent).value());
  if (out.empty()) return out;
  std::vector<std::int64_t> idx(n, 0);  // within the slice
  std::size_t o = 0;
  for (;;) {
    std::uint64_t lin = 0;
    for (std::size_t d = 0; d < n; ++d)
      lin = lin * static_cast<std::uint64_t>(g.shape[d]) +
            static_cast<std::uint64_t>(s.offset[d] + idx[d]);
    std::memcpy(out.data() + o, g.bytes.data() + lin * es, es);
    o += es;
    std::size_t d = n;
    while (d > 0) {
      --d;
      if (++idx[d] < s.extent[d]) break;
      idx[d] = 0;
      if (d == 0) return out;
    }
    if (n == 0) return out;
  }
}

/// An owned array holding `bytes`.
inline ckpt::array owned(ckpt::dtype t, const ckpt::shape& s, const std::vector<std::uint8_t>& b) {
  auto a = ckpt::array::zeros(t, s).value();
  if (!b.empty()) std::memcpy(a.mutable_bytes().data(), b.data(), b.size());
  return a;
}

/// Slicings. `save`: how rank `rank` of `size` holds each leaf when saving (rows, columns, a
/// grid, replicas, data-parallel duplicates); `load`: a different slicing for loading.
enum class layout { save, load };

inline std::vector<slice> slices_for(const global_leaf& g, int rank, int size, layout l) {
  const bool saving = l == layout::save;
  if (g.path == "params/b" || g.path == "step") return {whole(g.shape)};  // replicated
  if (g.path == "params/w") {
    return {saving ? row_slice(g.shape, rank, size) : slice_along(g.shape, 1, rank, size)};
  }
  if (g.path == "params/emb") {
    return {saving ? slice_along(g.shape, 1, rank, size) : row_slice(g.shape, rank, size)};
  }
  if (g.path == "opt/m") {
    if (saving && size % 2 == 0) {  // a 2 x (size/2) grid
      slice r = row_slice(g.shape, rank / (size / 2), 2);
      slice c = slice_along(g.shape, 1, rank % (size / 2), size / 2);
      return {{{r.offset[0], c.offset[1]}, {r.extent[0], c.extent[1]}}};
    }
    return {row_slice(g.shape, rank, size)};
  }
  if (g.path == "sparse") {
    if (saving && size % 2 == 0) return {row_slice(g.shape, rank % 2, 2)};  // duplicated halves
    // Loading: two slices per rank (rows, interleaved), to exercise several shards of a leaf.
    std::vector<slice> out;
    for (int part : {rank, rank + size})
      out.push_back(row_slice(g.shape, part, 2 * size));
    return out;
  }
  return {row_slice(g.shape, rank, size)};
}

/// Rank `rank`'s leaves holding real bytes (for a save).
inline std::vector<sharded_leaf> rank_leaves(const std::vector<global_leaf>& globals, int rank,
                                             int size) {
  std::vector<sharded_leaf> out;
  for (const auto& g : globals) {
    sharded_leaf l;
    l.path = g.path;
    l.dtype = g.dtype;
    l.global_shape = g.shape;
    l.replicated = g.path == "params/b" || g.path == "step";
    for (const auto& s : slices_for(g, rank, size, layout::save))
      l.shards.push_back({s, owned(g.dtype, s.extent, extract(g, s))});
    out.push_back(std::move(l));
  }
  return out;
}

/// Rank `rank`'s load request (specs) in the load slicing, or in the save's (`layout::save`).
inline std::vector<sharded_leaf> rank_requests(const std::vector<global_leaf>& globals, int rank,
                                               int size, layout l = layout::load) {
  std::vector<sharded_leaf> out;
  for (const auto& g : globals)
    out.push_back(
        sharded_leaf::spec(g.path, g.dtype, g.shape, slices_for(g, rank, size, l)).value());
  return out;
}

/// Empty when every shard of `loaded` equals the reference bytes; else what differs.
inline std::string compare(const std::vector<global_leaf>& globals,
                           const std::vector<sharded_leaf>& loaded) {
  std::string out;
  for (const auto& l : loaded) {
    const global_leaf* g = nullptr;
    for (const auto& x : globals)
      if (x.path == l.path) g = &x;
    if (!g) {
      out += "unexpected leaf " + l.path + "\n";
      continue;
    }
    for (const auto& s : l.shards) {
      const auto want = extract(*g, s.where);
      const auto got = s.data.bytes();
      if (got.size() != want.size() ||
          (!want.empty() && std::memcmp(got.data(), want.data(), want.size()) != 0)) {
        out += l.path + " " + s.where.to_string() + " differs\n";
      }
    }
  }
  return out;
}

}  // namespace ckpt::test
