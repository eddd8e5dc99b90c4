// ckpt/dlpack.hpp: DLPack tensors in and out as leaves. Every mapped dtype through a durable
// save and a load and back out; the deleter of an adopted tensor runs exactly once, and only
// after the save that held it completed; refusals of unmapped dtypes, strides and devices.
#include "support.hpp"

#include <ckpt/dlpack.hpp>
#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

using ckpt::array;
using ckpt::dtype;
using ckpt::errc;
using ckpt::tree;

namespace {

/// Counts the deleter calls of the tensors made by make_tensor.
struct probe {
  std::atomic<int> calls{0};
  std::function<void()> on_delete;
};

/// A producer's tensor: its own page-aligned buffer, shape and strides, freed by its deleter.
struct producer_tensor {
  DLManagedTensor managed{};
  std::vector<std::int64_t> shape, strides;
  void* data = nullptr;
  probe* p = nullptr;

  static void deleter(DLManagedTensor* self) {
    auto* t = static_cast<producer_tensor*>(self->manager_ctx);
    probe* p = t->p;
    std::free(t->data);
    delete t;
    if (p) {
      if (p->on_delete) p->on_delete();
      p->calls.fetch_add(1);
    }
  }
};

/// A tensor of `bytes` bytes of deterministic random data (0/1 for bool), or `data_bytes` when
/// non-empty. `strides` empty: NULL (compact).
DLManagedTensor* make_tensor(DLDataType dt, std::vector<std::int64_t> shape, std::size_t bytes,
                             std::uint64_t seed, probe* p, std::vector<std::int64_t> strides = {},
                             DLDevice device = {kDLCPU, 0}) {
  auto* t = new producer_tensor;
  t->shape = std::move(shape);
  t->strides = std::move(strides);
  t->p = p;
  const std::size_t alloc = ((bytes + 4095) / 4096) * 4096 + 4096;
  t->data = std::aligned_alloc(4096, alloc);
  auto r = ckpt::test::random_bytes(bytes, seed);
  if (!r.empty()) std::memcpy(t->data, r.data(), r.size());
  if (dt.code == ckpt::dlpack::bool_code) {
    auto* b = static_cast<std::uint8_t*>(t->data);
    for (std::size_t i = 0; i < bytes; ++i)
      b[i] &= 1u;
  }
  DLTensor& d = t->managed.dl_tensor;
  d.data = t->data;
  d.device = device;
  d.ndim = static_cast<int>(t->shape.size());
  d.dtype = dt;
  d.shape = t->shape.data();
  d.strides = t->strides.empty() ? nullptr : t->strides.data();
  d.byte_offset = 0;
  t->managed.manager_ctx = t;
  t->managed.deleter = &producer_tensor::deleter;
  return &t->managed;
}

std::vector<std::byte> bytes_of(const DLTensor& t, std::size_t n) {
  const auto* b = static_cast<const std::byte*>(t.data) + t.byte_offset;
  return {b, b + n};
}

bool is_mapped(dtype d) {
  return d != dtype::f8_e4m3 && d != dtype::f8_e5m2;
}

}  // namespace

TEST_CASE("dtype mapping covers every dtype both sides have", "[dlpack]") {
  for (dtype d : ckpt::all_dtypes) {
    INFO(ckpt::dtype_name(d));
    auto dl = ckpt::dlpack::to_dl_dtype(d);
    if (!is_mapped(d)) {
      REQUIRE_FALSE(dl);
      CHECK(dl.error() == errc::unknown_dtype);
      CHECK_THAT(dl.error().message(), Catch::Contains("no DLPack dtype"));
      continue;
    }
    REQUIRE(dl);
    CHECK(dl.value().lanes == 1);
    CHECK(dl.value().bits == 8 * ckpt::dtype_size(d));
    auto back = ckpt::dlpack::to_ckpt_dtype(dl.value());
    REQUIRE(back);
    CHECK(back.value() == d);
  }
  CHECK(ckpt::dlpack::to_dl_dtype(dtype::bf16).value().code == kDLBfloat);
  CHECK(ckpt::dlpack::to_dl_dtype(dtype::f16).value().code == kDLFloat);
  // DLPack types ckpt has no dtype for.
  for (DLDataType t : {DLDataType{kDLComplex, 64, 1}, DLDataType{kDLFloat, 32, 4},
                       DLDataType{kDLOpaqueHandle, 64, 1}, DLDataType{kDLFloat, 8, 1},
                       DLDataType{kDLInt, 4, 1}, DLDataType{kDLBfloat, 32, 1},
                       DLDataType{ckpt::dlpack::bool_code, 1, 1}, DLDataType{99, 8, 1}}) {
    auto r = ckpt::dlpack::to_ckpt_dtype(t);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::unknown_dtype);
  }
}

TEST_CASE("every mapped dtype round-trips DLPack -> save -> load -> DLPack", "[dlpack]") {
  ckpt::test::temp_dir dir;
  probe p;
  tree t = tree::dict();
  std::vector<std::vector<std::byte>> expected;
  std::vector<dtype> dtypes;
  std::uint64_t seed = 7;
  for (dtype d : ckpt::all_dtypes) {
    if (!is_mapped(d)) continue;
    const std::vector<std::int64_t> shape{3, 5, 7};
    const std::size_t bytes = 3 * 5 * 7 * ckpt::dtype_size(d);
    DLManagedTensor* m = make_tensor(ckpt::dlpack::to_dl_dtype(d).value(), shape, bytes, seed++, &p,
                                     {35, 7, 1});  // explicit compact strides
    expected.push_back(bytes_of(m->dl_tensor, bytes));
    auto a = ckpt::dlpack::from_dlpack(m);
    REQUIRE(a);
    CHECK(a.value().ownership() == ckpt::ownership::shared);
    CHECK(a.value().dtype() == d);
    CHECK(a.value().shape() == ckpt::shape{3, 5, 7});
    // Zero copy: the leaf is the producer's memory.
    CHECK(a.value().bytes().data() == static_cast<const std::byte*>(m->dl_tensor.data));
    t.set(std::string(ckpt::dtype_name(d)), a.value());
    dtypes.push_back(d);
  }
  // A scalar and an empty tensor too.
  {
    DLManagedTensor* s = make_tensor({kDLFloat, 64, 1}, {}, 8, 99, &p);
    t.set("scalar", ckpt::dlpack::from_dlpack(s).value());
    DLManagedTensor* e = make_tensor({kDLInt, 32, 1}, {0, 4}, 0, 100, &p);
    t.set("empty", ckpt::dlpack::from_dlpack(e).value());
  }
  const int tensors = static_cast<int>(dtypes.size()) + 2;

  auto saved = ckpt::save_blocking(dir / "ck", t, {});
  REQUIRE(saved);
  CHECK(p.calls.load() == 0);  // the tree still holds them
  t = tree();
  // The save's own references go with its state, on its pipeline thread at the latest.
  for (int i = 0; i < 500 && p.calls.load() < tensors; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  CHECK(p.calls.load() == tensors);

  auto loaded = ckpt::load_blocking(dir / "ck");
  REQUIRE(loaded);
  const tree& lt = loaded.value().tree;
  for (std::size_t i = 0; i < dtypes.size(); ++i) {
    const dtype d = dtypes[i];
    INFO(ckpt::dtype_name(d));
    const tree* leaf = lt.get(ckpt::dtype_name(d));
    REQUIRE(leaf);
    REQUIRE(leaf->is_leaf());
    const array& a = leaf->leaf();
    CHECK(a.dtype() == d);
    REQUIRE(a.num_bytes() == expected[i].size());
    CHECK(std::memcmp(a.bytes().data(), expected[i].data(), a.num_bytes()) == 0);

    // Out again, for a framework to adopt: it keeps the loaded (owned) array alive.
    auto out = ckpt::dlpack::to_dlpack(a);
    REQUIRE(out);
    DLManagedTensor* m = out.value();
    const long uses_before = a.owner().use_count();
    CHECK(m->dl_tensor.device.device_type == kDLCPU);
    CHECK(m->dl_tensor.dtype.code == ckpt::dlpack::to_dl_dtype(d).value().code);
    CHECK(m->dl_tensor.dtype.bits == 8 * ckpt::dtype_size(d));
    REQUIRE(m->dl_tensor.ndim == 3);
    CHECK(std::vector<std::int64_t>(m->dl_tensor.shape, m->dl_tensor.shape + 3) ==
          std::vector<std::int64_t>{3, 5, 7});
    CHECK(std::vector<std::int64_t>(m->dl_tensor.strides, m->dl_tensor.strides + 3) ==
          std::vector<std::int64_t>{35, 7, 1});
    CHECK(bytes_of(m->dl_tensor, expected[i].size()) == expected[i]);
    // ... and in once more: the same bytes, zero copy.
    auto again = ckpt::dlpack::from_dlpack(m);
    REQUIRE(again);
    CHECK(again.value() == a);
    CHECK(again.value().bytes().data() == a.bytes().data());
    again = array();  // runs the export's deleter, which drops its reference
    CHECK(a.owner().use_count() == uses_before - 1);

    // The copying export owns its bytes.
    auto copy = ckpt::dlpack::to_dlpack_copy(a);
    REQUIRE(copy);
    CHECK(copy.value()->dl_tensor.data != static_cast<const void*>(a.bytes().data()));
    CHECK(bytes_of(copy.value()->dl_tensor, expected[i].size()) == expected[i]);
    copy.value()->deleter(copy.value());
  }
  const array& scalar = lt.get("scalar")->leaf();
  CHECK(scalar.shape().empty());
  auto sm = ckpt::dlpack::to_dlpack(scalar).value();
  CHECK(sm->dl_tensor.ndim == 0);
  sm->deleter(sm);
  CHECK(lt.get("empty")->leaf().shape() == ckpt::shape{0, 4});
}

TEST_CASE("an adopted tensor's deleter runs once, after the save holding it", "[dlpack]") {
  for (const auto& root : ckpt::test::test_roots()) {
    INFO(root.string());
    ckpt::test::temp_dir dir(root);
    probe p;
    std::atomic<bool> committed{false};
    std::atomic<bool> deleted_before_commit{false};
    p.on_delete = [&] {
      if (!committed.load()) deleted_before_commit = true;
    };
    // 24 MiB of f32 (several page-aligned raw chunks: the zero-copy write path).
    const std::int64_t n = 6 << 20;
    DLManagedTensor* m =
        make_tensor({kDLFloat, 32, 1}, {n}, static_cast<std::size_t>(n) * 4, 5, &p);
    const auto expected = bytes_of(m->dl_tensor, static_cast<std::size_t>(n) * 4);
    std::optional<ckpt::save_handle> h;
    {
      auto a = ckpt::dlpack::from_dlpack(m);
      REQUIRE(a);
      tree t = tree::dict({{"w", a.value()}});
      ckpt::save_options o;
      o.compress = false;
      h = ckpt::start_save(dir / "ck", t, {}, o);
    }  // from here the save holds the only reference
    REQUIRE(h->wait_staged());
    REQUIRE(h->wait_committed());
    CHECK(p.calls.load() == 0);  // the handle keeps the save's state, and with it the leaf
    committed = true;
    h.reset();
    for (int i = 0; i < 1000 && p.calls.load() == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    CHECK(p.calls.load() == 1);
    CHECK_FALSE(deleted_before_commit.load());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(p.calls.load() == 1);

    auto loaded = ckpt::load_blocking(dir / "ck");
    REQUIRE(loaded);
    const array& w = loaded.value().tree.get("w")->leaf();
    REQUIRE(w.num_bytes() == expected.size());
    CHECK(std::memcmp(w.bytes().data(), expected.data(), expected.size()) == 0);
  }
}

TEST_CASE("borrowed DLTensor views are saved before staged and filled in place by a load",
          "[dlpack]") {
  ckpt::test::temp_dir dir;
  probe p;
  DLManagedTensor* m = make_tensor({kDLInt, 64, 1}, {16, 16}, 16 * 16 * 8, 11, &p);
  const auto expected = bytes_of(m->dl_tensor, 16 * 16 * 8);
  auto view = ckpt::dlpack::borrow_dltensor(m->dl_tensor);
  REQUIRE(view);
  CHECK(view.value().ownership() == ckpt::ownership::borrowed);
  CHECK(view.value().is_writable());
  REQUIRE(ckpt::save_blocking(dir / "ck", tree::dict({{"x", view.value()}}), {}));
  std::memset(m->dl_tensor.data, 0, expected.size());
  tree templ = tree::dict({{"x", view.value()}});
  REQUIRE(ckpt::load_blocking(dir / "ck", &templ));
  CHECK(bytes_of(m->dl_tensor, expected.size()) == expected);
  m->deleter(m);
  CHECK(p.calls.load() == 1);
}

TEST_CASE("strided CPU tensors are refused, or copied on request", "[dlpack]") {
  probe p;
  // A 4 x 6 i32 row-major buffer viewed transposed: shape [6, 4], strides [1, 6].
  DLManagedTensor* m = make_tensor({kDLInt, 32, 1}, {6, 4}, 24 * 4, 3, &p, {1, 6});
  auto a = ckpt::dlpack::from_dlpack(m);
  REQUIRE_FALSE(a);
  CHECK(a.error() == errc::invalid_argument);
  CHECK_THAT(a.error().message(), Catch::Contains("non-contiguous strides [1, 6]"));
  CHECK_THAT(a.error().message(), Catch::Contains("copy_from_dltensor"));
  CHECK(p.calls.load() == 0);  // refused: still ours
  CHECK_FALSE(ckpt::dlpack::borrow_dltensor(m->dl_tensor));

  auto c = ckpt::dlpack::copy_from_dltensor(m->dl_tensor);
  REQUIRE(c);
  CHECK(c.value().ownership() == ckpt::ownership::owned);
  CHECK(c.value().shape() == ckpt::shape{6, 4});
  const auto* src = static_cast<const std::int32_t*>(m->dl_tensor.data);
  auto got = c.value().as<std::int32_t>();
  bool same = true;
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 4; ++j)
      same = same && got[i * 4 + j] == src[j * 6 + i];
  CHECK(same);

  // A row slice (contiguous rows, a row stride larger than the row): strides [8, 1] of [3, 4].
  m->dl_tensor.shape[0] = 3;
  m->dl_tensor.strides[0] = 8;
  m->dl_tensor.strides[1] = 1;
  CHECK_FALSE(ckpt::dlpack::borrow_dltensor(m->dl_tensor));
  auto rows = ckpt::dlpack::copy_from_dltensor(m->dl_tensor).value();
  auto r = rows.as<std::int32_t>();
  CHECK(r[4] == src[8]);
  CHECK(r[11] == src[19]);

  // Size-1 dimensions may carry any stride: still contiguous.
  m->dl_tensor.shape[0] = 1;
  m->dl_tensor.strides[0] = 12345;
  CHECK(ckpt::dlpack::borrow_dltensor(m->dl_tensor));
  m->deleter(m);
  CHECK(p.calls.load() == 1);
}

TEST_CASE("non-CPU and malformed tensors are refused without being taken", "[dlpack]") {
  probe p;
  // A tensor that claims to live on a CUDA device (its pointer is host memory here, but ckpt
  // must not read it).
  DLManagedTensor* g = make_tensor({kDLFloat, 32, 1}, {8}, 32, 1, &p, {}, {kDLCUDA, 1});
  auto a = ckpt::dlpack::from_dlpack(g);
  REQUIRE_FALSE(a);
  CHECK(a.error() == errc::invalid_argument);
  CHECK_THAT(a.error().message(), Catch::Contains("kDLCUDA:1"));
  CHECK_FALSE(ckpt::dlpack::borrow_dltensor(g->dl_tensor));
  CHECK_FALSE(ckpt::dlpack::copy_from_dltensor(g->dl_tensor));
  for (auto dev : {kDLOpenCL, kDLVulkan, kDLMetal, kDLROCM, kDLCUDAManaged, kDLExtDev}) {
    g->dl_tensor.device = {dev, 0};
    CHECK_FALSE(ckpt::dlpack::from_dlpack(g));
  }
  // Pinned host memory is host memory.
  g->dl_tensor.device = {kDLCUDAHost, 0};
  CHECK(ckpt::dlpack::borrow_dltensor(g->dl_tensor));
  CHECK(p.calls.load() == 0);
  g->deleter(g);

  CHECK(ckpt::dlpack::from_dlpack(nullptr).error() == errc::invalid_argument);
  DLManagedTensor* bad = make_tensor({kDLComplex, 64, 1}, {4}, 32, 2, &p);
  CHECK(ckpt::dlpack::from_dlpack(bad).error() == errc::unknown_dtype);
  bad->dl_tensor.dtype = {kDLFloat, 32, 1};
  bad->dl_tensor.shape[0] = -4;
  CHECK(ckpt::dlpack::from_dlpack(bad).error() == errc::invalid_argument);
  bad->dl_tensor.shape[0] = 4;
  void* data = bad->dl_tensor.data;
  bad->dl_tensor.data = nullptr;
  CHECK(ckpt::dlpack::from_dlpack(bad).error() == errc::invalid_argument);
  bad->dl_tensor.data = data;
  bad->dl_tensor.ndim = -1;
  CHECK(ckpt::dlpack::from_dlpack(bad).error() == errc::invalid_argument);
  bad->dl_tensor.ndim = 1;
  CHECK(p.calls.load() == 1);
  bad->deleter(bad);
  CHECK(p.calls.load() == 2);

  CHECK(ckpt::dlpack::to_dlpack(array::zeros(dtype::f8_e4m3, {2}).value()).error() ==
        errc::unknown_dtype);
  CHECK(ckpt::dlpack::to_dlpack(array::spec(dtype::f32, {2}).value()).error() ==
        errc::invalid_argument);
}
