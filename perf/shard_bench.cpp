// ckpt-perf shard: sharded save throughput with N ranks against 1 rank, on the same total bytes.
//
//   ckpt-perf shard --dir DIR [--bytes 1GiB] [--ranks 1,4] [--leaves 8] [--runs 3] [--json]
//                   [--data-files N (per rank)] [--mpirun PATH] [--threads]
//
// Method: the global state is `--leaves` f32 arrays [rows, 1024] of `--bytes` in total
// (incompressible bytes, stored raw), each split by rows across the ranks (row_slice). Each
// configuration is one MPI job launched as `mpirun --oversubscribe --allow-run-as-root -np R
// ckpt-perf shard-worker ...`; runs alternate between the rank counts (1, 4, 1, 4, ...). A
// worker builds and pre-faults its slices and the staging memory (untimed), waits at a barrier,
// and rank 0 times save_sharded_blocking() from there to the commit of the whole checkpoint
// (every rank's data fsynced and committed, the global index and COMMIT written, the rename
// and directory fsyncs done). GiB/s = total logical bytes / that time; the figure is the
// median over runs. Without MPI (or with --threads) the ranks are threads of one process on an
// in-memory coordinator group.
#include "bench_util.hpp"
#include "perf.hpp"
#include "workloads.hpp"

#include <ckpt/coordinator.hpp>
#include <ckpt/save.hpp>
#include <ckpt/shard.hpp>
#ifdef CKPT_PERF_MPI
#include <ckpt/mpi_coordinator.hpp>
#endif

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ckpt::perf {

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

struct shard_config {
  std::string dir = "/work/perfdir-perf";
  std::uint64_t bytes = 1ull << 30;
  int leaves = 8;
  int runs = 3;
  unsigned data_files = 0;  // per rank; 0: save_options' default
  std::vector<int> ranks{1, 4};
  bool json = false;
  bool threads = false;
  std::string mpirun = default_mpirun();
};

constexpr std::int64_t row_elems = 1024;  // f32: 4 KiB rows

// Rank `rank`'s slices of the benchmark's leaves, filled with incompressible bytes.
std::vector<sharded_leaf> make_slices(const shard_config& c, int rank, int size) {
  const std::int64_t rows =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(c.bytes / c.leaves / (row_elems * 4)));
  std::vector<sharded_leaf> out;
  for (int l = 0; l < c.leaves; ++l) {
    sharded_leaf leaf;
    leaf.path = "layers/" + std::to_string(l) + "/w";
    leaf.dtype = dtype::f32;
    leaf.global_shape = {rows, row_elems};
    const slice s = row_slice(leaf.global_shape, rank, size);
    auto a = array::zeros(dtype::f32, s.extent).value();
    auto b = a.mutable_bytes();
    std::uint64_t x = 0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(l + 1) +
                      static_cast<std::uint64_t>(s.offset[0]);
    for (std::size_t i = 0; i + 8 <= b.size(); i += 8) {
      x += 0x9e3779b97f4a7c15ULL;
      std::uint64_t z = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      z ^= z >> 31;
      std::memcpy(b.data() + i, &z, 8);
    }
    leaf.shards.push_back({s, std::move(a)});
    out.push_back(std::move(leaf));
  }
  return out;
}

// One timed save as rank 0 saw it: the total and when each protocol stage ended (seconds).
struct sample {
  double seconds = 0;
  double plan_s = 0;      // plan broadcast
  double local_s = 0;     // rank 0's own checkpoint committed
  double gathered_s = 0;  // every rank's manifest at rank 0 (the slowest rank's checkpoint)
};

// One rank's part: build, warm up, barrier, timed save.
result<sample> worker(const shard_config& c, std::shared_ptr<coordinator> coord,
                      const std::string& name) {
  auto leaves = make_slices(c, coord->rank(), coord->size());
  // The staging memory of this rank's own checkpoint, faulted in ahead (as a training job
  // would, once at start-up): the same tree shape as the one the sharded save writes.
  tree local = tree::dict();
  std::uint64_t mine = 0;
  for (const auto& l : leaves) {
    local.set(l.path, tree::list({l.shards[0].data}));
    mine += l.shards[0].data.num_bytes();
  }
  (void)reserve_staging(local);
  prefault(mine);
  const fs::path path = fs::path(c.dir) / name;
  CKPT_TRY(coord->barrier());
  const auto t0 = clock_type::now();
  sharded_save_options so;
  if (c.data_files) so.local.data_files = c.data_files;
  CKPT_TRY(auto st,
           save_sharded_blocking(coord, path, std::move(leaves), {{"bench", "shard"}}, so));
  const sample out{std::chrono::duration<double>(clock_type::now() - t0).count(), st.plan_s,
                   st.local_s, st.gathered_s};
  if (coord->rank() == 0) {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  CKPT_TRY(coord->barrier());
  return out;
}

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    const std::size_t comma = s.find(',', pos);
    out.push_back(std::stoi(s.substr(pos, comma - pos)));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

bool parse_args(int argc, char** argv, shard_config& c, std::string& name) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--dir") {
      c.dir = next();
    } else if (a == "--bytes") {
      auto b = parse_bytes(next());
      if (!b) throw std::invalid_argument("--bytes: not a byte count");
      c.bytes = *b;
    } else if (a == "--leaves") {
      c.leaves = std::max(1, std::stoi(next()));
    } else if (a == "--data-files") {
      c.data_files = static_cast<unsigned>(std::max(0, std::stoi(next())));
    } else if (a == "--runs") {
      c.runs = std::max(1, std::stoi(next()));
    } else if (a == "--ranks") {
      c.ranks = parse_list(next());
    } else if (a == "--mpirun") {
      c.mpirun = next();
    } else if (a == "--name") {
      name = next();
    } else if (a == "--json") {
      c.json = true;
    } else if (a == "--threads") {
      c.threads = true;
    } else {
      std::fprintf(stderr, "ckpt-perf shard: unknown option %s\n", a.c_str());
      return false;
    }
  }
  return true;
}

// One configuration as an MPI job; rank 0's JSON line carries the sample.
result<sample> run_mpi(const shard_config& c, int ranks, int run) {
  CKPT_TRY(auto o, run_mpi_worker(c.mpirun, ranks,
                                  "shard-worker --dir " + shell_quote(c.dir) + " --bytes " +
                                      std::to_string(c.bytes) + " --leaves " +
                                      std::to_string(c.leaves) + " --data-files " +
                                      std::to_string(c.data_files) + " --name ckpt-perf-shard-" +
                                      std::to_string(ranks) + "-" + std::to_string(run),
                                  "{\"seconds\":"));
  return sample{o.at("seconds").to_number<double>(), o.at("plan_s").to_number<double>(),
                o.at("local_s").to_number<double>(), o.at("gathered_s").to_number<double>()};
}

// One configuration as threads of this process.
result<sample> run_threads(const shard_config& c, int ranks, int run) {
  auto group = make_local_group(ranks);
  std::vector<std::optional<result<sample>>> out(static_cast<std::size_t>(ranks));
  std::vector<std::thread> threads;
  const std::string name = "ckpt-perf-shard-" + std::to_string(ranks) + "-" + std::to_string(run);
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back(
        [&, r] { out[static_cast<std::size_t>(r)].emplace(worker(c, group[r], name)); });
  }
  for (auto& t : threads)
    t.join();
  for (auto& o : out)
    if (!*o) return fail(o->error());
  return out[0]->value();
}

int shard_worker_main(int argc, char** argv) {
#ifdef CKPT_PERF_MPI
  shard_config c;
  std::string name = "ckpt-perf-shard";
  if (!parse_args(argc, argv, c, name)) return 2;
  auto coord = make_mpi_coordinator(&argc, &argv);
  if (!coord) {
    std::fprintf(stderr, "shard-worker: %s\n", coord.error().what().c_str());
    return 1;
  }
  auto secs = worker(c, coord.value(), name);
  if (!secs) {
    std::fprintf(stderr, "shard-worker rank %d: %s\n", coord.value()->rank(),
                 secs.error().what().c_str());
    return 1;
  }
  if (coord.value()->rank() == 0) {
    const sample& x = secs.value();
    std::printf("{\"seconds\":%.6f,\"plan_s\":%.6f,\"local_s\":%.6f,\"gathered_s\":%.6f}\n",
                x.seconds, x.plan_s, x.local_s, x.gathered_s);
  }
  coord.value().reset();
  return 0;
#else
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "shard-worker: ckpt-perf was built without MPI\n");
  return 2;
#endif
}

int shard_main(int argc, char** argv) {
  shard_config c;
  std::string name;
  if (!parse_args(argc, argv, c, name)) return 2;
#ifndef CKPT_PERF_MPI
  c.threads = true;
#endif
  fs::create_directories(c.dir);
  std::vector<std::vector<double>> gibps(c.ranks.size()), secs(c.ranks.size()),
      plan(c.ranks.size()), local(c.ranks.size()), gathered(c.ranks.size()), commit(c.ranks.size());
  for (int run = 0; run < c.runs; ++run) {
    for (std::size_t k = 0; k < c.ranks.size(); ++k) {
      auto s = c.threads ? run_threads(c, c.ranks[k], run) : run_mpi(c, c.ranks[k], run);
      if (!s) {
        std::fprintf(stderr, "ckpt-perf shard: %s\n", s.error().what().c_str());
        return 1;
      }
      const sample& x = s.value();
      secs[k].push_back(x.seconds);
      plan[k].push_back(x.plan_s);
      local[k].push_back(x.local_s);
      gathered[k].push_back(x.gathered_s);
      commit[k].push_back(x.seconds - x.gathered_s);
      gibps[k].push_back(static_cast<double>(c.bytes) / x.seconds / gib);
      if (!c.json) {
        std::fprintf(stderr, "  run %d, %d rank%s: %.3f s, %.3f GiB/s\n", run + 1, c.ranks[k],
                     c.ranks[k] == 1 ? "" : "s", x.seconds, gibps[k].back());
      }
    }
  }
  const std::string method =
      std::string(
          "durable sharded saves (every rank's data fsynced and committed, global index, "
          "COMMIT, rename, directory fsyncs) of f32 leaves split by rows, incompressible; "
          "timed on rank 0 from a barrier to the commit; ") +
      (c.threads ? "ranks are threads of one process (in-memory coordinator)"
                 : "ranks are MPI processes (mpirun --oversubscribe)") +
      "; rank counts alternated run by run";
  boost::json::array results;
  for (std::size_t k = 0; k < c.ranks.size(); ++k) {
    results.push_back(boost::json::object{{"ranks", c.ranks[k]},
                                          {"save_gibps", summarize(gibps[k]).median},
                                          {"save_gibps_spread", to_json(summarize(gibps[k]))},
                                          {"save_s", summarize(secs[k]).median},
                                          {"stages",
                                           {{"plan_s", summarize(plan[k]).median},
                                            {"rank0_local_s", summarize(local[k]).median},
                                            {"all_ranks_s", summarize(gathered[k]).median},
                                            {"global_commit_s", summarize(commit[k]).median}}}});
  }
  boost::json::object j{{"bench", "shard"},
                        {"method", method},
                        {"logical_bytes", c.bytes},
                        {"leaves", c.leaves},
                        {"runs", c.runs},
                        {"results", results},
                        {"machine", machine_facts(c.dir)}};
  if (c.json) {
    std::printf("%s\n", boost::json::serialize(j).c_str());
    return 0;
  }
  std::printf(
      "shard save: %.3f GiB logical in %d leaves split by rows, %d run(s): median "
      "(min-max)\n",
      static_cast<double>(c.bytes) / gib, c.leaves, c.runs);
  std::printf("  method: %s\n", method.c_str());
  std::printf("  machine: %s\n", machine_line(c.dir).c_str());
  const double base = summarize(gibps[0]).median;
  for (std::size_t k = 0; k < c.ranks.size(); ++k) {
    const spread s = summarize(gibps[k]);
    std::printf("  %d rank%s  %s GiB/s   %.3f s   x%.2f of %d rank%s\n", c.ranks[k],
                c.ranks[k] == 1 ? " " : "s", describe(s, "%.3f").c_str(), summarize(secs[k]).median,
                s.median / base, c.ranks[0], c.ranks[0] == 1 ? "" : "s");
    std::printf(
        "           stages, s from the barrier: plan %.3f, rank 0's own checkpoint %.3f, "
        "every rank's %.3f, then the global commit %.3f\n",
        summarize(plan[k]).median, summarize(local[k]).median, summarize(gathered[k]).median,
        summarize(commit[k]).median);
  }
  return 0;
}

}  // namespace

ckpt::perf::register_command shard_cmd("shard",
                                       "sharded save throughput: N ranks against 1 (mpirun)",
                                       shard_main);
ckpt::perf::register_command shard_worker_cmd("shard-worker",
                                              "(internal) one rank of `shard`, under mpirun",
                                              shard_worker_main);

}  // namespace ckpt::perf
