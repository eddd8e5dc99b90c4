// preemption_guard: SIGTERM becomes a flag, and the save in flight either commits within the
// deadline or is abandoned without leaving anything visible.
#include "io/backend.hpp"
#include "support.hpp"

#include <ckpt/load.hpp>
#include <ckpt/preemption.hpp>

#include <catch2/catch.hpp>

#include <thread>

namespace fs = std::filesystem;
using ckpt::array;
using ckpt::dtype;
using ckpt::tree;

namespace {

// Makes every write take `delay` (a slow disk), so that a deadline can expire mid-save.
class slow_backend final : public ckpt::io::backend {
 public:
  slow_backend(std::unique_ptr<ckpt::io::backend> inner, std::chrono::milliseconds delay)
      : inner_(std::move(inner)), delay_(delay) {}
  std::string_view name() const noexcept override { return "slow"; }
  void submit(ckpt::io::op* o) noexcept override {
    if (o->req.kind == ckpt::io::op_kind::write) std::this_thread::sleep_for(delay_);
    inner_->submit(o);
  }
  void shutdown() noexcept override { inner_->shutdown(); }

 private:
  std::unique_ptr<ckpt::io::backend> inner_;
  std::chrono::milliseconds delay_;
};

std::shared_ptr<ckpt::runtime> slow_runtime(std::chrono::milliseconds delay) {
  auto b = std::make_unique<slow_backend>(ckpt::io::make_thread_backend({}).value(), delay);
  auto e = ckpt::io::make_engine(std::move(b)).value();
  return ckpt::runtime::create(e).value();
}

// The save's coroutine may still hold the last reference to its runtime for a moment after the
// result is out; a runtime must never be destroyed on its own thread, so the test keeps one and
// waits until it is the only one left.
void release_when_idle(std::shared_ptr<ckpt::runtime>& rt) {
  for (int i = 0; i < 5000 && rt.use_count() > 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(rt.use_count() == 1);
  rt.reset();
}

tree big_tree() {
  auto w = array::zeros(dtype::f32, {4 << 20}).value();  // 16 MiB
  auto s = w.as_mutable<float>();
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = static_cast<float>(i);
  return tree::dict({{"w", w}});
}

}  // namespace

TEST_CASE("SIGTERM sets the preemption flag instead of killing", "[preempt]") {
  ckpt::preemption_guard guard;
  CHECK_FALSE(guard.requested());
  std::raise(SIGTERM);
  CHECK(guard.requested());
}

TEST_CASE("a save past the preemption deadline is abandoned cleanly", "[preempt]") {
  ckpt::test::temp_dir dir;
  ckpt::save_options so;
  so.chunk_bytes = 256 << 10;  // 64 writes of 20 ms: over a second
  so.compress = false;
  auto rt = slow_runtime(std::chrono::milliseconds(20));
  so.runtime = rt;
  const tree t = big_tree();
  ckpt::preemption_guard guard;
  ckpt::result<void> r = ckpt::success();
  {
    auto h = ckpt::start_save(dir / "step_1", t, {}, so);
    so.runtime.reset();
    std::raise(SIGTERM);
    REQUIRE(guard.requested());
    r = guard.finish_or_abandon(h, std::chrono::milliseconds(50));
  }
  release_when_idle(rt);
  REQUIRE_FALSE(r);
  CHECK(r.error() == ckpt::errc::cancelled);
  CHECK_FALSE(fs::exists(dir / "step_1"));
  for (auto& e : fs::directory_iterator(dir.path()))
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
}

TEST_CASE("a save within the preemption deadline commits", "[preempt]") {
  ckpt::test::temp_dir dir;
  ckpt::save_options so;
  so.chunk_bytes = 4 << 20;
  auto rt = slow_runtime(std::chrono::milliseconds(1));
  so.runtime = rt;
  const tree t = big_tree();
  ckpt::preemption_guard guard;
  ckpt::result<void> r = ckpt::success();
  {
    auto h = ckpt::start_save(dir / "step_1", t, {}, so);
    so.runtime.reset();
    ckpt::preemption_guard::request();
    r = guard.finish_or_abandon(h, std::chrono::seconds(60));
  }
  release_when_idle(rt);
  REQUIRE(r);
  CHECK(ckpt::load_blocking(dir / "step_1").value().tree == t);
}
