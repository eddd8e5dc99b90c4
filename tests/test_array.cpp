#include "pipeline/buffer_pool.hpp"

#include <ckpt/array.hpp>

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <limits>
#include <vector>

using ckpt::dtype;

TEST_CASE("element counts and byte sizes are overflow-checked", "[array]") {
  CHECK(ckpt::element_count(ckpt::shape{}).value() == 1);  // 0-d scalar
  CHECK(ckpt::element_count(ckpt::shape{3, 0, 5}).value() == 0);
  CHECK(ckpt::byte_size(dtype::f32, ckpt::shape{640, 2560}).value() == 640ull * 2560 * 4);
  const std::int64_t big = std::numeric_limits<std::int64_t>::max();
  auto r = ckpt::element_count(ckpt::shape{big, 2});
  REQUIRE_FALSE(r);
  CHECK(r.error() == ckpt::errc::shape_overflow);
  // A zero extent makes any product zero, even past an overflowing prefix.
  CHECK(ckpt::element_count(ckpt::shape{big, big, 0}).value() == 0);
  auto b = ckpt::byte_size(dtype::f64, ckpt::shape{big / 4});
  REQUIRE_FALSE(b);
  CHECK(b.error() == ckpt::errc::shape_overflow);
  auto neg = ckpt::element_count(ckpt::shape{2, -1});
  REQUIRE_FALSE(neg);
  CHECK(neg.error() == ckpt::errc::invalid_argument);
}

TEST_CASE("borrowed arrays check their byte size", "[array]") {
  std::vector<float> v(6, 2.0f);
  auto a = ckpt::array::borrow(std::span<float>(v), {2, 3});
  REQUIRE(a);
  CHECK(a.value().ownership() == ckpt::ownership::borrowed);
  CHECK(a.value().is_writable());
  CHECK(a.value().num_bytes() == 24);
  CHECK(a.value().describe() == "f32[2, 3]");
  CHECK(a.value().as<float>()[5] == 2.0f);
  CHECK(a.value().as<std::uint32_t>().size() == 6);  // raw bits view
  CHECK_THROWS_AS(a.value().as<double>(), std::logic_error);

  auto wrong = ckpt::array::borrow(std::span<float>(v), {4, 2});
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error() == ckpt::errc::size_mismatch);
  CHECK(wrong.error().message().find("f32[4, 2] needs 32 bytes, got 24") != std::string::npos);

  const std::vector<float>& cv = v;
  auto ro = ckpt::array::borrow(std::span<const float>(cv), {6});
  REQUIRE(ro);
  CHECK_FALSE(ro.value().is_writable());
  CHECK(ro.value().mutable_bytes().empty());
}

TEST_CASE("0-d, empty, shared, owned and spec arrays", "[array]") {
  std::int64_t step = 123456;
  auto scalar = ckpt::array::borrow(std::span<std::int64_t>(&step, 1), {});
  REQUIRE(scalar);
  CHECK(scalar.value().num_elements() == 1);
  CHECK(scalar.value().shape().empty());

  auto empty = ckpt::array::borrow(dtype::f32, {0, 7}, std::span<const std::byte>{});
  REQUIRE(empty);
  CHECK(empty.value().num_bytes() == 0);
  CHECK_FALSE(empty.value().is_spec());

  auto buf = std::make_shared<std::vector<std::uint16_t>>(8, 7);
  auto shared = ckpt::array::share(dtype::bf16, {8}, buf, std::as_bytes(std::span(*buf)));
  REQUIRE(shared);
  CHECK(shared.value().ownership() == ckpt::ownership::shared);
  CHECK_FALSE(shared.value().is_writable());
  CHECK(shared.value().owner().get() == buf.get());

  auto z = ckpt::array::zeros(dtype::i16, {3, 3});
  REQUIRE(z);
  CHECK(z.value().ownership() == ckpt::ownership::owned);
  CHECK(ckpt::is_aligned(z.value().bytes().data(), ckpt::aligned_buffer::small_alignment));
  // From page_aligned_min on an owned array starts on a page (the O_DIRECT paths take it).
  auto big = ckpt::array::zeros(dtype::u8, {ckpt::aligned_buffer::page_aligned_min});
  REQUIRE(big);
  CHECK(ckpt::is_aligned(big.value().bytes().data(), 4096));
  static_assert(ckpt::aligned_buffer::array_alignment(65535) == 64);
  static_assert(ckpt::aligned_buffer::array_alignment(65536) == 4096);
  for (auto x : z.value().as<std::int16_t>())
    CHECK(x == 0);

  auto s = ckpt::array::spec(dtype::f32, {4, 4});
  REQUIRE(s);
  CHECK(s.value().is_spec());
  CHECK(s.value().bytes().empty());
  CHECK(s.value().num_bytes() == 64);
}

TEST_CASE("array equality compares dtype, shape and bytes", "[array]") {
  std::vector<float> a(4, 1.0f), b(4, 1.0f);
  auto x = ckpt::array::borrow(std::span<float>(a), {4}).value();
  auto y = ckpt::array::borrow(std::span<float>(b), {4}).value();
  CHECK(x == y);
  b[3] = 2.0f;
  CHECK_FALSE(x == y);
  auto z = ckpt::array::borrow(std::span<float>(a), {2, 2}).value();
  CHECK_FALSE(x == z);
}

TEST_CASE("aligned buffers are aligned and move-only", "[array][buffer]") {
  ckpt::aligned_buffer b(5000);
  CHECK(b.size() == 5000);
  CHECK(b.capacity() == 8192);
  CHECK(ckpt::is_aligned(b.data(), 4096));
  auto* p = b.data();
  ckpt::aligned_buffer c(std::move(b));
  CHECK(c.data() == p);
  CHECK(b.data() == nullptr);
  c.resize(8192);
  CHECK_THROWS(c.resize(8193));
  ckpt::aligned_buffer e(100, 64);
  CHECK(e.capacity() == 128);
  CHECK_THROWS_AS(ckpt::aligned_buffer(10, 3), std::invalid_argument);
  CHECK(ckpt::aligned_buffer(0).data() == nullptr);
}

TEST_CASE("the staging pool's take_faulted returns buffers with their pages in", "[buffer]") {
  // A new buffer's pages are written before it is returned (so that an O_DIRECT read into it,
  // or a start_save after reserve_staging, does not fault them in). mincore() says which pages
  // are resident.
  ckpt::detail::buffer_pool pool(64 << 20);
  auto b = pool.take_faulted(3 << 20);
  REQUIRE(b.size() == std::size_t{3} << 20);
  REQUIRE(b.capacity() == std::size_t{3} << 20);
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in(b.capacity() / page);
  REQUIRE(::mincore(b.data(), b.capacity(), in.data()) == 0);
  std::size_t resident = 0;
  for (unsigned char v : in)
    resident += v & 1;
  CHECK(resident == in.size());
  // A buffer given back comes out again as it is (a hit in the pool touches nothing).
  auto* p = b.data();
  pool.give(std::move(b));
  CHECK(pool.take_faulted(3 << 20).data() == p);
}
