// The MPI side of the sharded-checkpoint tests, run by tests/mpi_shard_test.sh through
// `mpirun --oversubscribe --allow-run-as-root -np N`:
//
//   save JOB STEP      every rank saves its slices of make_globals(STEP) as JOB/step_STEP with
//                      the MPI coordinator; rank 0 then registers it as LATEST; prints "ack STEP"
//                      once every rank knows LATEST is durable.
//   load JOB STEP      every rank loads its slices in the load slicing (another one than the
//                      save's, for any number of ranks) and compares them bit for bit.
//   fail JOB STEP      rank 2's IO fails: every rank must get the same error naming rank 2, and
//                      nothing may become visible.
//   check JOB ACK      (one process, no MPI) the oracle after a kill: LATEST names a committed
//                      sharded checkpoint at step >= ACK that loads bit-exact, and no other
//                      step is visible but committed ones.
//   cleanup JOB        (one process) store::cleanup_stale, as a restarted job would.
//
// Kills: CKPT_KILL_POINT (src/testing.hpp) applies only to the rank KILL_RANK names; the other
// ranks drop it before anything runs. Each rank writes its pid to JOB/../pids/rank-R so that the
// script can kill one at a random time.
#include "io/backend.hpp"
#include "shard_support.hpp"

#include <ckpt/mpi_coordinator.hpp>
#include <ckpt/shard.hpp>
#include <ckpt/store.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace fs = std::filesystem;

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

std::string step_name(int step) {
  return "step_" + std::to_string(step);
}

int fail_with(int rank, const std::string& what) {
  std::printf("rank %d: FAIL %s\n", rank, what.c_str());
  std::fflush(stdout);
  return 1;
}

int save_mode(ckpt::coordinator& c, std::shared_ptr<ckpt::coordinator> cp, const fs::path& job,
              int step) {
  const int rank = c.rank();
  const auto globals = ckpt::test::make_globals(static_cast<std::uint64_t>(step));
  ckpt::sharded_save_options so;
  so.local.chunk_bytes = 64 << 10;
  auto r = ckpt::save_sharded_blocking(cp, job / step_name(step),
                                       ckpt::test::rank_leaves(globals, rank, c.size()),
                                       {{"step", step}}, so);
  if (!r) return fail_with(rank, "save: " + r.error().what());
  // LATEST: rank 0 alone writes it; every rank returns once it is durable.
  ckpt::result<void> latest = ckpt::success();
  if (rank == 0) latest = ckpt::store::write_latest(job, step_name(step));
  auto agreed = ckpt::agree(c, latest);
  if (!agreed) return fail_with(rank, "register: " + agreed.error().what());
  if (rank == 0) {
    const auto& s = r.value();
    std::printf("ack %d\n", step);
    std::printf("saved %s: %d ranks, %llu logical bytes, %llu stored, %.3f s\n",
                step_name(step).c_str(), s.ranks, static_cast<unsigned long long>(s.logical_bytes),
                static_cast<unsigned long long>(s.stored_bytes), s.committed_s);
    std::fflush(stdout);
  }
  return 0;
}

int load_mode(ckpt::coordinator& c, const fs::path& job, int step) {
  const int rank = c.rank();
  const auto globals = ckpt::test::make_globals(static_cast<std::uint64_t>(step));
  auto got = ckpt::load_sharded_blocking(job / step_name(step),
                                         ckpt::test::rank_requests(globals, rank, c.size()));
  ckpt::result<void> mine = ckpt::success();
  if (!got) {
    mine = ckpt::fail(got.error());
  } else if (auto diff = ckpt::test::compare(globals, got.value().leaves); !diff.empty()) {
    mine = ckpt::fail(ckpt::errc::corrupt, "not bit-exact:\n" + diff);
  } else if (got.value().leaves.size() != globals.size()) {
    mine = ckpt::fail(ckpt::errc::corrupt, "leaves missing");
  }
  auto all = ckpt::agree(c, mine);
  if (!all)
    return fail_with(rank,
                     "load with " + std::to_string(c.size()) + " ranks: " + all.error().what());
  if (rank == 0) {
    std::printf("loaded %s with %d ranks: bit-exact\n", step_name(step).c_str(), c.size());
    std::fflush(stdout);
  }
  return 0;
}

int fail_mode(ckpt::coordinator& c, std::shared_ptr<ckpt::coordinator> cp, const fs::path& job,
              int step) {
  const int rank = c.rank();
  const auto globals = ckpt::test::make_globals(static_cast<std::uint64_t>(step));
  ckpt::sharded_save_options so;
  if (rank == 2) {
    auto engine = ckpt::io::make_engine(std::make_unique<ckpt::test::failing_writes>(
                                            ckpt::io::make_thread_backend({}).value(), 0))
                      .value();
    so.local.runtime = ckpt::runtime::create(engine).value();
  }
  auto r = ckpt::save_sharded_blocking(cp, job / step_name(step),
                                       ckpt::test::rank_leaves(globals, rank, c.size()), {}, so);
  if (r) return fail_with(rank, "a save with a failing rank succeeded");
  const std::string msg = r.error().message();
  if (!(r.error() == std::errc::io_error) || msg.find("rank 2: ") == std::string::npos) {
    return fail_with(rank, "unexpected error: " + r.error().what());
  }
  // Every rank got the same message.
  auto all = c.gather(msg, 0);
  if (!all) return fail_with(rank, all.error().what());
  if (rank == 0) {
    for (const auto& m : all.value())
      if (m != msg) return fail_with(rank, "ranks saw different errors: " + m);
    if (fs::exists(job / step_name(step))) return fail_with(rank, "the failed step is visible");
    for (const auto& e : fs::directory_iterator(job)) {
      if (e.path().filename().string().find(".tmp-") != std::string::npos) {
        return fail_with(rank, "temporary directory left: " + e.path().string());
      }
    }
    std::printf("failure of rank 2 reached every rank: %s\n", msg.c_str());
    std::fflush(stdout);
  }
  return 0;
}

// The oracle after a kill (one process).
int check_mode(const fs::path& job, int ack) {
  auto latest = ckpt::store::read_latest(job);
  if (!latest) return fail_with(0, "LATEST unreadable: " + latest.error().what());
  if (!latest.value()) return fail_with(0, "no LATEST");
  const std::string name = *latest.value();
  const int step = std::atoi(name.substr(name.find('_') + 1).c_str());
  if (step < ack) {
    return fail_with(
        0, "LATEST names " + name + ", older than the acknowledged step " + std::to_string(ack));
  }
  const auto globals = ckpt::test::make_globals(static_cast<std::uint64_t>(step));
  auto full = ckpt::load_sharded_full_blocking(job / name);
  if (!full) return fail_with(0, "load " + name + ": " + full.error().what());
  for (const auto& g : globals) {
    const ckpt::tree* node = full.value().tree.find(g.path);
    if (!node || !node->is_leaf()) return fail_with(0, g.path + " missing");
    const auto b = node->leaf().bytes();
    if (b.size() != g.bytes.size() ||
        (!b.empty() && std::memcmp(b.data(), g.bytes.data(), b.size()) != 0)) {
      return fail_with(0, g.path + " differs");
    }
  }
  // Visible names are committed checkpoints (plus LATEST); hidden ones are ckpt's temporaries,
  // and LATEST.tmp is what a kill while LATEST is being replaced leaves (FORMAT.md: written,
  // fsynced, renamed over LATEST; the next start-up's cleanup removes it).
  auto committed = ckpt::store::list_committed(job);
  if (!committed) return fail_with(0, committed.error().what());
  for (const auto& e : fs::directory_iterator(job)) {
    const std::string n = e.path().filename().string();
    if (n == "LATEST" || n == "LATEST.tmp" || n[0] == '.') continue;
    if (std::find(committed.value().begin(), committed.value().end(), n) ==
        committed.value().end()) {
      return fail_with(0, "visible but not committed: " + n);
    }
  }
  std::printf("check: LATEST %s (ack %d) loads bit-exact; %zu committed\n", name.c_str(), ack,
              committed.value().size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s save|load|fail|check|cleanup JOB [STEP|ACK]\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  const fs::path job = fs::absolute(argv[2]);
  const int step = argc > 3 ? std::atoi(argv[3]) : 0;
  if (mode == "check") return check_mode(job, step);
  if (mode == "cleanup") {
    auto r = ckpt::store::cleanup_stale(job);
    if (!r) return fail_with(0, r.error().what());
    std::printf("cleanup: removed %zu\n", r.value().removed.size());
    return 0;
  }
  // Only the rank KILL_RANK names keeps CKPT_KILL_POINT (mpirun exports it to every rank).
  const int world_rank = env_int("OMPI_COMM_WORLD_RANK", 0);
  if (env_int("KILL_RANK", -1) != world_rank) ::unsetenv("CKPT_KILL_POINT");
  if (const char* pids = std::getenv("PID_DIR")) {
    std::ofstream(fs::path(pids) / ("rank-" + std::to_string(world_rank))) << ::getpid() << "\n";
  }
  auto coord = ckpt::make_mpi_coordinator(&argc, &argv);
  if (!coord) return fail_with(world_rank, coord.error().what());
  auto& c = *coord.value();
  int rc = 2;
  if (mode == "save") rc = save_mode(c, coord.value(), job, step);
  if (mode == "load") rc = load_mode(c, job, step);
  if (mode == "fail") rc = fail_mode(c, coord.value(), job, step);
  // Everyone leaves together (a failed rank's exit code makes mpirun fail).
  (void)c.barrier();
  coord.value().reset();
  return rc;
}
