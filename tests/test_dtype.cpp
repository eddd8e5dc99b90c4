#include <ckpt/dtype.hpp>

#include <catch2/catch.hpp>

TEST_CASE("every dtype round-trips through its name", "[dtype]") {
  for (auto t : ckpt::all_dtypes) {
    auto parsed = ckpt::parse_dtype(ckpt::dtype_name(t));
    REQUIRE(parsed);
    CHECK(parsed.value() == t);
  }
  CHECK(ckpt::dtype_size(ckpt::dtype::bool_) == 1);
  CHECK(ckpt::dtype_size(ckpt::dtype::bf16) == 2);
  CHECK(ckpt::dtype_size(ckpt::dtype::f32) == 4);
  CHECK(ckpt::dtype_size(ckpt::dtype::u64) == 8);
  CHECK(ckpt::dtype_size(ckpt::dtype::f8_e5m2) == 1);
  CHECK(ckpt::is_floating(ckpt::dtype::bf16));
  CHECK_FALSE(ckpt::is_floating(ckpt::dtype::i32));
  CHECK(ckpt::dtype_of<float> == ckpt::dtype::f32);
  CHECK(ckpt::dtype_of<std::int64_t> == ckpt::dtype::i64);
}

TEST_CASE("unknown dtype names give a clear error", "[dtype]") {
  auto r = ckpt::parse_dtype("float32");
  REQUIRE_FALSE(r);
  CHECK(r.error() == ckpt::errc::unknown_dtype);
  CHECK(r.error().message().find("\"float32\"") != std::string::npos);
  CHECK_FALSE(ckpt::parse_dtype(""));
  CHECK_FALSE(ckpt::parse_dtype("F32"));
}
