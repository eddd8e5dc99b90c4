#include <ckpt/error.hpp>

#include <catch2/catch.hpp>

namespace {
ckpt::result<int> parse_positive(int v) {
  if (v <= 0)
    return ckpt::fail(ckpt::errc::invalid_argument,
                      "value " + std::to_string(v) + " is not positive");
  return v;
}
ckpt::result<int> twice(int v) {
  CKPT_TRY_CTX(int x, parse_positive(v), "while doubling");
  return 2 * x;
}
}  // namespace

TEST_CASE("errors carry code, message and context", "[error]") {
  auto r = twice(-3);
  REQUIRE_FALSE(r);
  CHECK(r.error() == ckpt::errc::invalid_argument);
  CHECK(r.error().message() == "while doubling: value -3 is not positive");
  CHECK(r.error().what() == "while doubling: value -3 is not positive: invalid argument");
  CHECK(twice(4).value() == 8);
}

TEST_CASE("value() on an error throws system_error with the message", "[error]") {
  auto r = twice(0);
  try {
    (void)r.value();
    FAIL("no throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == ckpt::errc::invalid_argument);
    CHECK(std::string(e.what()).find("while doubling") != std::string::npos);
  }
}

TEST_CASE("system errors keep their errno", "[error]") {
  auto e = ckpt::system_error(ENOENT, "open index.json");
  CHECK(e == std::errc::no_such_file_or_directory);
  CHECK(e.what().find("open index.json: No such file or directory") == 0);
  CHECK(ckpt::error_category().name() == std::string("ckpt"));
  CHECK(ckpt::make_error_code(ckpt::errc::corrupt).message() == "checkpoint is corrupt");
}
