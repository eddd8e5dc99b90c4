// ckpt-kill-child: the child of tests/kill_test.sh. It checks the ORACLE on start-up, then
// checkpoints on the real disk until it is killed.
//
//   ckpt-kill-child JOB_DIR MIN_STEP ROUNDS
//
// Start-up: removes stale temporary/trash entries, reads LATEST and loads it; the checkpoint
// must be at step MIN_STEP or later (the last step a killed run acknowledged) and equal, bit
// for bit, to the tree of its step; so must every other listed checkpoint. Prints "verified N"
// (exit 3 and "VIOLATION ..." otherwise). Then ROUNDS times: save step_{N+1} differentially
// against LATEST (its "frozen" leaf never changes: shared through a hard link to the file that
// first held it; overwriting a committed but unregistered one a killed run left), register it
// as LATEST, print and flush "ack N+1" (acknowledged), apply retention (keep the last 2, which
// retires checkpoints whose files kept ones still link). Linked with ckpt_testing, so
// CKPT_KILL_POINT=name[:n] raises SIGKILL at a named point of the protocol (src/testing.hpp).
#include "support.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/store.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fs = std::filesystem;

namespace {

ckpt::tree tree_for(std::uint64_t step) {
  auto w = ckpt::array::zeros(ckpt::dtype::f32, {256 * 1024}).value();  // 1 MiB, incompressible
  auto rb = ckpt::test::random_bytes(w.num_bytes(), 5000 + step);
  std::memcpy(w.as_mutable<float>().data(), rb.data(), rb.size());
  auto m = ckpt::array::zeros(ckpt::dtype::f32, {64 * 1024}).value();  // compressible
  auto s = m.as_mutable<float>();
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = static_cast<float>(step) + 0.5f * static_cast<float>(i % 31);
  auto st = ckpt::array::zeros(ckpt::dtype::u64, {1}).value();
  st.as_mutable<std::uint64_t>()[0] = step;
  auto frozen = ckpt::array::zeros(ckpt::dtype::f32, {512 * 1024}).value();  // 2 MiB, constant
  auto fb = ckpt::test::random_bytes(frozen.num_bytes(), 4242);
  std::memcpy(frozen.as_mutable<float>().data(), fb.data(), fb.size());
  return ckpt::tree::dict({{"params", w}, {"moments", m}, {"frozen", frozen}, {"step", st}});
}

int violation(const std::string& what) {
  std::printf("VIOLATION %s\n", what.c_str());
  std::fflush(stdout);
  return 3;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: ckpt-kill-child JOB_DIR MIN_STEP ROUNDS\n");
    return 2;
  }
  const fs::path job = argv[1];
  const std::uint64_t min_step = std::strtoull(argv[2], nullptr, 10);
  const long rounds = std::strtol(argv[3], nullptr, 10);

  if (auto c = ckpt::store::cleanup_stale(job); !c)
    return violation("cleanup: " + c.error().message());
  std::uint64_t step = 0;
  auto latest = ckpt::store::read_latest(job);
  if (!latest) return violation("LATEST unreadable: " + latest.error().message());
  if (!latest.value()) {
    if (min_step > 0)
      return violation("no LATEST after step " + std::to_string(min_step) + " was acknowledged");
  } else {
    auto loaded = ckpt::load_blocking(job / *latest.value());
    if (!loaded) return violation("LATEST does not load: " + loaded.error().message());
    step = static_cast<std::uint64_t>(loaded.value().metadata.at("step").as_int64());
    if (step < min_step) {
      return violation("LATEST is step " + std::to_string(step) + ", step " +
                       std::to_string(min_step) + " was acknowledged");
    }
    if (!(loaded.value().tree == tree_for(step)))
      return violation("step " + std::to_string(step) + " loads different data");
  }
  // Every listed checkpoint loads, whatever retention deleted under the ones that share files.
  auto listed = ckpt::store::list_committed(job);
  if (!listed) return violation("listing: " + listed.error().message());
  std::size_t linked = 0;  // listed checkpoints holding a hard link to an earlier one's file
  for (const auto& name : listed.value()) {
    for (const auto& e : fs::directory_iterator(job / name)) {
      if (e.path().filename().string().rfind("shared-", 0) == 0) {
        ++linked;
        break;
      }
    }
    auto loaded = ckpt::load_blocking(job / name);
    if (!loaded) return violation("listed " + name + " does not load: " + loaded.error().message());
    const auto s = static_cast<std::uint64_t>(loaded.value().metadata.at("step").as_int64());
    if (!(loaded.value().tree == tree_for(s)))
      return violation("listed " + name + " loads different data");
  }
  std::printf("verified %llu listed %zu linked %zu\n", static_cast<unsigned long long>(step),
              listed.value().size(), linked);
  std::fflush(stdout);

  ckpt::save_options so;
  so.chunk_bytes = 128 << 10;
  so.overwrite = true;  // a killed run may have committed this step without registering it
  ckpt::store::retention_options keep;
  keep.keep_last = 2;
  for (long r = 0; r < rounds; ++r) {
    ++step;
    const std::string name = "step_" + std::to_string(step);
    auto base = ckpt::store::read_latest(job);
    so.base = base && base.value() ? job / *base.value() : fs::path();
    so.base_optional = true;
    auto saved = ckpt::save_blocking(job / name, tree_for(step),
                                     {{"step", static_cast<std::int64_t>(step)}}, so);
    if (!saved) {
      std::fprintf(stderr, "save: %s\n", saved.error().message().c_str());
      return 1;
    }
    if (auto l = ckpt::store::write_latest(job, name); !l) {
      std::fprintf(stderr, "register: %s\n", l.error().message().c_str());
      return 1;
    }
    std::printf("ack %llu\n", static_cast<unsigned long long>(step));
    std::fflush(stdout);
    if (auto k = ckpt::store::apply_retention(job, keep); !k) {
      std::fprintf(stderr, "retention: %s\n", k.error().message().c_str());
      return 1;
    }
  }
  return 0;
}
