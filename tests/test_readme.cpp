// The README's 20-line example, compiled and run as written (keep the two in step).
#include "support.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

namespace {

void train_more_steps(std::vector<float>& w) {
  for (auto& x : w)
    x += 1.0f;
}

boost::asio::awaitable<bool> readme_example(std::string dir) {
  std::vector<float> w(1 << 20), b(1024);  // your model's memory
  ckpt::tree state = ckpt::tree::dict(
      {{"params", ckpt::tree::dict({{"w", ckpt::array::borrow(std::span(w), {1024, 1024}).value()},
                                    {"b", ckpt::array::borrow(std::span(b), {1024}).value()}})},
       {"step", ckpt::array::zeros(ckpt::dtype::i64, {}).value()}});

  auto h = ckpt::start_save(dir + "/run1/step_100", state, {{"step", 100}});
  auto staged = co_await h.staged();        // every byte captured: w and b may change from here on
  train_more_steps(w);                      // the checkpoint is written meanwhile
  auto committed = co_await h.committed();  // durable and visible
  if (!staged || !committed) co_return false;

  // Restore straight into the same memory (zero copy).
  auto got = co_await ckpt::load(dir + "/run1/step_100", &state);
  co_return got&& w[0] == 0.0f && got.value().metadata.at("step").as_int64() == 100 &&
      got.value().tree.find("params/w")->leaf().bytes().data() ==
          reinterpret_cast<std::byte*>(w.data());
}

}  // namespace

TEST_CASE("the README example works as written", "[readme]") {
  ckpt::test::temp_dir dir;
  boost::asio::io_context ctx;
  bool ok = false;
  boost::asio::co_spawn(
      ctx, [&]() -> boost::asio::awaitable<void> { ok = co_await readme_example(dir.path()); },
      boost::asio::detached);
  ctx.run();
  ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  CHECK(ok);
}
