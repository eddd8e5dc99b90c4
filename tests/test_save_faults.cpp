// A save whose IO fails at operation k, for every k: it fails cleanly (or, for a failure after
// the commit point, succeeds), leaves no temporary directory behind, and never harms the
// checkpoint that was there before.
#include "io/backend.hpp"
#include "support.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

namespace fs = std::filesystem;
using ckpt::array;
using ckpt::dtype;
using ckpt::tree;

namespace {

// Fails the op with index `fail_at` (counting from 0) with -`err`, once; or, when persistent,
// fails every op from `fail_at` on that needs space (a full disk: open with O_CREAT, mkdir,
// write, fallocate) until heal() is called.
class failing_backend final : public ckpt::io::backend {
 public:
  failing_backend(std::unique_ptr<ckpt::io::backend> inner, long fail_at, int err,
                  bool persistent = false)
      : inner_(std::move(inner)), fail_at_(fail_at), err_(err), persistent_(persistent) {}
  std::string_view name() const noexcept override { return "failing"; }
  void submit(ckpt::io::op* o) noexcept override {
    long n = count_++;
    if (n == fail_at_ && !persistent_) {
      failed_kind_ = o->req.kind;
      o->complete(-err_);
      return;
    }
    if (persistent_ && n >= fail_at_ && fail_at_ >= 0 && !healed_ && needs_space(o->req)) {
      if (failures_++ == 0) failed_kind_ = o->req.kind;
      o->complete(-err_);
      return;
    }
    inner_->submit(o);
  }
  static bool needs_space(const ckpt::io::request& r) {
    using k = ckpt::io::op_kind;
    return r.kind == k::write || r.kind == k::fallocate || r.kind == k::mkdir ||
           (r.kind == k::open && (r.flags & O_CREAT) != 0);
  }
  void heal() { healed_ = true; }
  long failures() const { return failures_; }
  void shutdown() noexcept override { inner_->shutdown(); }
  long count() const { return count_; }
  ckpt::io::op_kind failed_kind() const { return failed_kind_; }

 private:
  std::unique_ptr<ckpt::io::backend> inner_;
  long fail_at_;
  int err_;
  bool persistent_;
  std::atomic<bool> healed_{false};
  std::atomic<long> failures_{0};
  std::atomic<long> count_{0};
  ckpt::io::op_kind failed_kind_ = ckpt::io::op_kind::open;
};

struct faulty_runtime {
  failing_backend* backend = nullptr;
  std::shared_ptr<ckpt::runtime> rt;
};

faulty_runtime make_runtime(long fail_at, int err, bool persistent = false) {
  auto inner = ckpt::io::make_thread_backend({}).value();
  auto b = std::make_unique<failing_backend>(std::move(inner), fail_at, err, persistent);
  faulty_runtime fr;
  fr.backend = b.get();
  auto engine = ckpt::io::make_engine(std::move(b)).value();
  ckpt::runtime_options ro;
  ro.cpu_threads = 2;
  ro.staging_budget = 64 << 20;
  fr.rt = ckpt::runtime::create(engine, ro).value();
  return fr;
}

array leaf(std::int64_t n, float v) {
  auto a = array::zeros(dtype::f32, {n}).value();
  for (auto& x : a.as_mutable<float>())
    x = v;
  return a;
}

}  // namespace

TEST_CASE("a save failing at any IO operation leaves the old checkpoint intact", "[save][faults]") {
  const bool overwrite = GENERATE(false, true);
  const int err = GENERATE(EIO, ENOSPC);
  tree old_tree = tree::dict({{"w", leaf(70000, 1.0f)}, {"b", leaf(10, 2.0f)}});
  tree new_tree = tree::dict({{"w", leaf(70000, 3.0f)}, {"b", leaf(10, 4.0f)}});
  ckpt::save_options so;
  so.chunk_bytes = 64 << 10;  // several units and data files
  so.overwrite = overwrite;

  // A clean run counts the operations of one save.
  long total = 0;
  {
    ckpt::test::temp_dir dir;
    REQUIRE(ckpt::save_blocking(dir / "old", old_tree, {}));
    auto fr = make_runtime(-1, err);
    so.runtime = fr.rt;
    REQUIRE(ckpt::save_blocking(dir / (overwrite ? "old" : "new"), new_tree, {}, so));
    total = fr.backend->count();
  }
  REQUIRE(total > 20);

  int failed = 0, succeeded = 0;
  for (long k = 0; k < total; ++k) {
    ckpt::test::temp_dir dir;
    REQUIRE(ckpt::save_blocking(dir / "old", old_tree, {{"v", 1}}));
    auto fr = make_runtime(k, err);
    so.runtime = fr.rt;
    const fs::path target = dir / (overwrite ? "old" : "new");
    auto r = ckpt::save_blocking(target, new_tree, {{"v", 2}}, so);
    INFO("failing op " << k << " of " << total << " ("
                       << ckpt::io::to_string(fr.backend->failed_kind()) << ")");
    fr.rt.reset();
    // No temporary directory is ever left behind.
    for (auto& e : fs::directory_iterator(dir.path())) {
      CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
    }
    if (r) {
      ++succeeded;
      CHECK(ckpt::load_blocking(target).value().tree == new_tree);
    } else {
      ++failed;
      CHECK(r.error().message().find(target.string()) != std::string::npos);
      if (!overwrite) CHECK_FALSE(fs::exists(dir / "new"));
    }
    // The old checkpoint is intact unless it was the one successfully replaced.
    if (!(overwrite && r)) {
      auto old = ckpt::load_blocking(dir / "old");
      REQUIRE(old);
      CHECK(old.value().tree == old_tree);
    }
  }
  // Every op before the commit point must fail the save.
  CHECK(failed > total / 2);
  UNSCOPED_INFO("ops " << total << ", failed saves " << failed << ", succeeded " << succeeded);
}

TEST_CASE("persistent ENOSPC from any op: clean failure, old checkpoint kept, next save succeeds",
          "[save][faults][enospc]") {
  tree old_tree = tree::dict({{"w", leaf(70000, 1.0f)}, {"b", leaf(10, 2.0f)}});
  tree new_tree = tree::dict({{"w", leaf(70000, 3.0f)}, {"b", leaf(10, 4.0f)}});
  ckpt::save_options so;
  so.chunk_bytes = 64 << 10;
  long total = 0;
  {
    ckpt::test::temp_dir dir;
    auto fr = make_runtime(-1, ENOSPC);
    so.runtime = fr.rt;
    REQUIRE(ckpt::save_blocking(dir / "new", new_tree, {}, so));
    total = fr.backend->count();
  }
  int tried = 0, failed = 0, lost = 0, recovered = 0;
  for (long k = 0; k < total; ++k) {
    ckpt::test::temp_dir dir;
    REQUIRE(ckpt::save_blocking(dir / "old", old_tree, {{"v", 1}}));
    auto fr = make_runtime(k, ENOSPC, /*persistent=*/true);
    so.runtime = fr.rt;
    auto r = ckpt::save_blocking(dir / "new", new_tree, {{"v", 2}}, so);
    ++tried;
    INFO("ENOSPC from op " << k << " of " << total);
    if (!r) {
      ++failed;
      CHECK(fr.backend->failures() > 0);
      if (k == 5) std::printf("  e.g. %s\n", r.error().what().c_str());
      CHECK(r.error() == std::errc::no_space_on_device);
      CHECK_FALSE(fs::exists(dir / "new"));
      for (auto& e : fs::directory_iterator(dir.path()))
        CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
    }
    auto old = ckpt::load_blocking(dir / "old");
    if (!old || !(old.value().tree == old_tree)) ++lost;
    // Space freed: the same runtime saves again.
    fr.backend->heal();
    auto again = ckpt::save_blocking(dir / (r ? "again" : "new"), new_tree, {{"v", 3}}, so);
    if (again && ckpt::load_blocking(dir / (r ? "again" : "new")).value().tree == new_tree)
      ++recovered;
    // Never let a save's coroutine drop the runtime's last reference (on its own thread).
    so.runtime.reset();
    for (int i = 0; i < 5000 && fr.rt.use_count() > 1; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(lost == 0);
  CHECK(recovered == tried);
  CHECK(failed > 0);
  std::printf(
      "enospc (simulated, persistent from op k): ops tried %d, failed saves %d, lost %d, "
      "crashes 0, recovery %d/%d\n",
      tried, failed, lost, recovered, tried);
  std::fflush(stdout);
}
