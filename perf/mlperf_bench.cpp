// ckpt-perf mlperf: the MLPerf Storage checkpointing pattern. R ranks (default 8) each hold
// `--bytes-per-rank` bytes (default 256 MiB) of a model's state, save it `--saves` times (10)
// as sharded checkpoints, then load each back with the page cache dropped before every load;
// the figures are set against fio with --numjobs=R writing and reading the same bytes per job
// in the same folder, run by run in turn.
//
//   ckpt-perf mlperf --dir DIR [--ranks 8] [--bytes-per-rank 256MiB] [--saves 10] [--layers 4]
//                    [--runs 3] [--threads] [--json] [--mpirun PATH]
//
// Method: a rank's state is uniform [0, 1) f32 (as torch.rand makes: incompressible for LZ4),
// split as MLPerf's per-rank model and optimizer files are: per layer `model/layers/L/w` and
// the optimizer's `optim/layers/L/exp_avg` and `exp_avg_sq`, a third of the bytes each, every
// global array split by rows across the ranks (row_slice). Each run is one MPI job (`mpirun
// --oversubscribe -np R ckpt-perf mlperf-worker`; threads of one process on an in-memory
// coordinator group without MPI or with --threads). A rank builds and pre-faults its slices
// and staging (untimed); each save starts at a barrier and is timed with save_sharded_blocking
// (`own`: until the rank's own part was durable, its rank checkpoint committed; `save`: until
// the whole checkpoint was, the global commit); each load starts after rank 0 dropped the page
// cache and a barrier, and times load_sharded_blocking of the rank's own slices into fresh
// memory. Per save and per load, as MLPerf Storage reports: the slowest rank's duration, the
// minimum per-rank GiB/s (bytes per rank / the slowest rank's `own` or load time) and the
// aggregate (all bytes / the slowest rank's `save` or load time); medians (and ranges) over
// every save and load of every run. fio: aggregate GiB/s of --numjobs=R --size=bytes-per-rank
// (O_DIRECT io_uring, bs 4M, iodepth 32, end_fsync on writes) after each run, and ckpt's
// median aggregate of that run as a ratio of it. Peak RSS: the largest rank's VmHWM (MPI) or
// the process's (threads), reset after the pre-faulting: the rank's state, its reserved
// staging, and what its saves and loads add.
#include "bench_util.hpp"
#include "fio.hpp"
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

#include <algorithm>
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

struct mlperf_config {
  std::string dir = "/work/perfdir-perf";
  int ranks = 8;
  std::uint64_t bytes_per_rank = 256ull << 20;
  int saves = 10;
  int layers = 4;
  int runs = 3;
  bool json = false;
  bool threads = false;
  std::string mpirun = default_mpirun();
};

constexpr std::int64_t row_elems = 1024;  // f32: 4 KiB rows
constexpr const char* parts[] = {"model/layers/%d/w", "optim/layers/%d/exp_avg",
                                 "optim/layers/%d/exp_avg_sq"};
constexpr int parts_per_layer = 3;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::int64_t rows_per_rank(const mlperf_config& c) {
  return std::max<std::int64_t>(
      1, static_cast<std::int64_t>(c.bytes_per_rank /
                                   static_cast<std::uint64_t>(c.layers * parts_per_layer) /
                                   (row_elems * 4)));
}
// The bytes a rank actually holds (whole 4 KiB rows).
std::uint64_t rank_bytes(const mlperf_config& c) {
  return static_cast<std::uint64_t>(rows_per_rank(c) * row_elems * 4) *
         static_cast<std::uint64_t>(c.layers * parts_per_layer);
}

// Rank `rank`'s slices: uniform [0, 1) f32 from a per-slice splitmix64 stream.
std::vector<sharded_leaf> make_slices(const mlperf_config& c, int rank) {
  std::vector<sharded_leaf> out;
  const ckpt::shape global{rows_per_rank(c) * c.ranks, row_elems};
  for (int l = 0; l < c.layers; ++l) {
    for (int p = 0; p < parts_per_layer; ++p) {
      char path[64];
      std::snprintf(path, sizeof path, parts[p], l);
      sharded_leaf leaf;
      leaf.path = path;
      leaf.dtype = dtype::f32;
      leaf.global_shape = global;
      const slice s = row_slice(global, rank, c.ranks);
      auto a = array::zeros(dtype::f32, s.extent).value();
      auto v = a.as_mutable<float>();
      std::uint64_t x = 0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(l * 3 + p + 1) +
                        static_cast<std::uint64_t>(s.offset[0]);
      for (auto& f : v) {
        x += 0x9e3779b97f4a7c15ULL;
        std::uint64_t z = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        f = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
      }
      leaf.shards.push_back({s, std::move(a)});
      out.push_back(std::move(leaf));
    }
  }
  return out;
}

// What one rank measured: one entry per save and per load.
struct rank_times {
  std::vector<double> own_s;   // its own part durable
  std::vector<double> save_s;  // the whole checkpoint committed
  std::vector<double> load_s;  // its slices loaded
  std::uint64_t peak_rss = 0;
};

boost::json::array json_list(const std::vector<double>& v) {
  boost::json::array a;
  for (double x : v)
    a.push_back(x);
  return a;
}
std::vector<double> list_from(const boost::json::value& v) {
  std::vector<double> out;
  for (const auto& x : v.as_array())
    out.push_back(x.to_number<double>());
  return out;
}
boost::json::object to_json(const rank_times& t) {
  return {{"own_s", json_list(t.own_s)},
          {"save_s", json_list(t.save_s)},
          {"load_s", json_list(t.load_s)},
          {"peak_rss", t.peak_rss}};
}
rank_times times_from_json(const boost::json::value& v) {
  const auto& o = v.as_object();
  return {list_from(o.at("own_s")), list_from(o.at("save_s")), list_from(o.at("load_s")),
          o.at("peak_rss").to_number<std::uint64_t>()};
}

std::string checkpoint_name(const std::string& name, int k) {
  return name + "-step_" + std::to_string(k + 1);
}

// One rank: build, warm up; `saves` timed saves, each from a barrier; then as many timed loads,
// each after a page-cache drop and a barrier. Rank 0 returns every rank's times (gathered), the
// others their own.
result<std::vector<rank_times>> rank_main(const mlperf_config& c, std::shared_ptr<coordinator> co,
                                          const std::string& name) {
  auto leaves = make_slices(c, co->rank());
  tree local = tree::dict();
  std::vector<sharded_leaf> wanted;
  for (const auto& l : leaves) {
    local.set(l.path, tree::list({l.shards[0].data}));
    CKPT_TRY(auto spec, sharded_leaf::spec(l.path, l.dtype, l.global_shape, {l.shards[0].where}));
    wanted.push_back(std::move(spec));
  }
  (void)reserve_staging(local);  // a training job does this once at start-up
  prefault(2 * rank_bytes(c));   // the loads' fresh arrays too
  local = tree();
  // Peak RSS from here: the rank's state, its staging and what saves and loads add (not the
  // pre-faulting, which touches memory only to free it).
  CKPT_TRY(co->barrier());
  (void)reset_peak_rss();
  rank_times t;
  for (int k = 0; k < c.saves; ++k) {
    CKPT_TRY(co->barrier());
    const auto t0 = clock_type::now();
    CKPT_TRY(auto st, save_sharded_blocking(co, fs::path(c.dir) / checkpoint_name(name, k), leaves,
                                            {{"bench", "mlperf"}, {"step", k + 1}}));
    t.save_s.push_back(seconds_since(t0));
    t.own_s.push_back(st.local_s);
  }
  for (int k = 0; k < c.saves; ++k) {
    CKPT_TRY(co->barrier());
    if (co->rank() == 0) (void)drop_page_cache();
    CKPT_TRY(co->barrier());
    const auto t0 = clock_type::now();
    CKPT_TRY(auto got, load_sharded_blocking(fs::path(c.dir) / checkpoint_name(name, k), wanted));
    t.load_s.push_back(seconds_since(t0));
    (void)got;
  }
  t.peak_rss = peak_rss_bytes();
  CKPT_TRY(co->barrier());
  if (co->rank() == 0) {
    for (int k = 0; k < c.saves; ++k) {
      std::error_code ec;
      fs::remove_all(fs::path(c.dir) / checkpoint_name(name, k), ec);
    }
  }
  CKPT_TRY(auto all, co->gather(boost::json::serialize(to_json(t)), 0));
  std::vector<rank_times> out;
  if (co->rank() == 0) {
    for (const auto& s : all)
      out.push_back(times_from_json(boost::json::parse(s)));
  } else {
    out.push_back(std::move(t));
  }
  CKPT_TRY(co->barrier());
  return out;
}

bool parse_args(int argc, char** argv, mlperf_config& c, std::string& name) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    auto positive = [&] { return std::max(1, std::stoi(next())); };
    if (a == "--dir") {
      c.dir = next();
    } else if (a == "--bytes-per-rank") {
      auto b = parse_bytes(next());
      if (!b || *b < (64u << 10)) {
        throw std::invalid_argument("--bytes-per-rank: a byte count of at least 64K");
      }
      c.bytes_per_rank = *b;
    } else if (a == "--ranks") {
      c.ranks = positive();
    } else if (a == "--saves") {
      c.saves = positive();
    } else if (a == "--layers") {
      c.layers = positive();
    } else if (a == "--runs") {
      c.runs = positive();
    } else if (a == "--mpirun") {
      c.mpirun = next();
    } else if (a == "--name") {
      name = next();
    } else if (a == "--json") {
      c.json = true;
    } else if (a == "--threads") {
      c.threads = true;
    } else {
      std::fprintf(stderr, "ckpt-perf mlperf: unknown option %s\n", a.c_str());
      return false;
    }
  }
  return true;
}

// One run as an MPI job; rank 0's JSON line carries every rank's times.
result<std::vector<rank_times>> run_mpi(const mlperf_config& c, int run) {
  CKPT_TRY(auto o,
           run_mpi_worker(c.mpirun, c.ranks,
                          "mlperf-worker --dir " + shell_quote(c.dir) + " --ranks " +
                              std::to_string(c.ranks) + " --bytes-per-rank " +
                              std::to_string(c.bytes_per_rank) + " --saves " +
                              std::to_string(c.saves) + " --layers " + std::to_string(c.layers) +
                              " --name ckpt-perf-mlperf-" + std::to_string(run),
                          "{\"ranks\":"));
  std::vector<rank_times> all;
  for (const auto& r : o.at("ranks").as_array())
    all.push_back(times_from_json(r));
  return all;
}

// One run as threads of this process (one runtime, the process's peak RSS).
result<std::vector<rank_times>> run_threads(const mlperf_config& c, int run) {
  auto group = make_local_group(c.ranks);
  std::vector<std::optional<result<std::vector<rank_times>>>> out(
      static_cast<std::size_t>(c.ranks));
  std::vector<std::thread> threads;
  const std::string name = "ckpt-perf-mlperf-" + std::to_string(run);
  for (int r = 0; r < c.ranks; ++r) {
    threads.emplace_back(
        [&, r] { out[static_cast<std::size_t>(r)].emplace(rank_main(c, group[r], name)); });
  }
  for (auto& t : threads)
    t.join();
  for (auto& o : out)
    if (!*o) return fail(o->error());
  auto all = out[0]->value();
  const std::uint64_t peak = peak_rss_bytes();
  for (auto& t : all)
    t.peak_rss = peak;
  return all;
}

int mlperf_worker_main(int argc, char** argv) {
#ifdef CKPT_PERF_MPI
  mlperf_config c;
  std::string name = "ckpt-perf-mlperf";
  if (!parse_args(argc, argv, c, name)) return 2;
  auto coord = make_mpi_coordinator(&argc, &argv);
  if (!coord) {
    std::fprintf(stderr, "mlperf-worker: %s\n", coord.error().what().c_str());
    return 1;
  }
  auto times = rank_main(c, coord.value(), name);
  if (!times) {
    std::fprintf(stderr, "mlperf-worker rank %d: %s\n", coord.value()->rank(),
                 times.error().what().c_str());
    return 1;
  }
  if (coord.value()->rank() == 0) {
    boost::json::array ranks;
    for (const auto& t : times.value())
      ranks.push_back(to_json(t));
    std::printf("%s\n", boost::json::serialize(boost::json::object{{"ranks", ranks}}).c_str());
  }
  coord.value().reset();
  return 0;
#else
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "mlperf-worker: ckpt-perf was built without MPI\n");
  return 2;
#endif
}

// The slowest rank's time of save or load k.
double slowest(const std::vector<rank_times>& all, std::vector<double> rank_times::*field,
               std::size_t k) {
  double m = 0;
  for (const auto& t : all)
    m = std::max(m, (t.*field).at(k));
  return m;
}

int mlperf_main(int argc, char** argv) {
  mlperf_config c;
  std::string name;
  if (!parse_args(argc, argv, c, name)) return 2;
#ifndef CKPT_PERF_MPI
  c.threads = true;
#endif
  fs::create_directories(c.dir);
  const std::uint64_t per_rank = rank_bytes(c);
  const std::uint64_t total = per_rank * static_cast<std::uint64_t>(c.ranks);
  // Over every save and load of every run:
  std::vector<double> save_slowest_s, load_slowest_s, min_save, agg_save, min_load, agg_load;
  // Per run:
  std::vector<double> fio_w, fio_r, ratio_w, ratio_r, peak;
  std::string fio_note;
  for (int run = 0; run < c.runs; ++run) {
    auto s = c.threads ? run_threads(c, run) : run_mpi(c, run);
    if (!s) {
      std::fprintf(stderr, "ckpt-perf mlperf: %s\n", s.error().what().c_str());
      return 1;
    }
    const auto& all = s.value();
    std::vector<double> run_save, run_load;
    for (std::size_t k = 0; k < static_cast<std::size_t>(c.saves); ++k) {
      const double own = slowest(all, &rank_times::own_s, k);
      const double whole = slowest(all, &rank_times::save_s, k);
      const double load = slowest(all, &rank_times::load_s, k);
      save_slowest_s.push_back(whole);
      load_slowest_s.push_back(load);
      min_save.push_back(static_cast<double>(per_rank) / own / gib);
      agg_save.push_back(static_cast<double>(total) / whole / gib);
      min_load.push_back(static_cast<double>(per_rank) / load / gib);
      agg_load.push_back(static_cast<double>(total) / load / gib);
      run_save.push_back(agg_save.back());
      run_load.push_back(agg_load.back());
    }
    std::uint64_t pk = 0;
    for (const auto& t : all)
      pk = std::max(pk, t.peak_rss);
    peak.push_back(static_cast<double>(pk) / (1 << 20));
    auto w = fio_gibps(c.dir, per_rank, true, &fio_note, c.ranks);
    auto r = fio_gibps(c.dir, per_rank, false, &fio_note, c.ranks);
    const double run_save_med = summarize(run_save).median;
    const double run_load_med = summarize(run_load).median;
    if (w) {
      fio_w.push_back(*w);
      ratio_w.push_back(run_save_med / *w);
    }
    if (r) {
      fio_r.push_back(*r);
      ratio_r.push_back(run_load_med / *r);
    }
    if (!c.json) {
      std::fprintf(stderr,
                   "  run %d: %d saves at %s GiB/s aggregate, %d loads at %s; fio x%d write %s, "
                   "read %s GiB/s\n",
                   run + 1, c.saves, describe(summarize(run_save), "%.3f").c_str(), c.saves,
                   describe(summarize(run_load), "%.3f").c_str(), c.ranks,
                   w ? std::to_string(*w).c_str() : "-", r ? std::to_string(*r).c_str() : "-");
    }
  }
  const std::string method =
      std::string(
          "R ranks save their rows of model and optimizer f32 arrays (uniform [0, 1), "
          "incompressible) as sharded checkpoints, `saves` times, then load each after "
          "a page-cache drop; per save and load: the slowest rank's duration, min-rank "
          "GiB/s = bytes per rank / the slowest rank's time (save: until its own part "
          "was durable), aggregate = all bytes / the slowest rank's time (save: until "
          "the global commit); fio --numjobs=R --size=bytes-per-rank O_DIRECT io_uring "
          "bs 4M iodepth 32 (end_fsync on writes) in the same folder after each run; ") +
      (c.threads ? "ranks are threads of one process" : "ranks are MPI processes");
  auto opt = [](const std::vector<double>& v) -> boost::json::value {
    if (v.empty()) return nullptr;
    return to_json(summarize(v));
  };
  boost::json::object j{{"bench", "mlperf"},
                        {"method", method},
                        {"ranks", c.ranks},
                        {"bytes_per_rank", per_rank},
                        {"saves", c.saves},
                        {"runs", c.runs},
                        {"save_slowest_rank_s", to_json(summarize(save_slowest_s))},
                        {"save_min_rank_gibps", to_json(summarize(min_save))},
                        {"save_aggregate_gibps", to_json(summarize(agg_save))},
                        {"load_slowest_rank_s", to_json(summarize(load_slowest_s))},
                        {"load_min_rank_gibps", to_json(summarize(min_load))},
                        {"load_aggregate_gibps", to_json(summarize(agg_load))},
                        {"fio_write_gibps", opt(fio_w)},
                        {"fio_read_gibps", opt(fio_r)},
                        {"save_vs_fio", opt(ratio_w)},
                        {"load_vs_fio", opt(ratio_r)},
                        {"peak_rss_mib", to_json(summarize(peak))},
                        {"machine", machine_facts(c.dir)}};
  if (fio_w.empty() || fio_r.empty()) j["fio_note"] = fio_note;
  if (c.json) {
    std::printf("%s\n", boost::json::serialize(j).c_str());
    return 0;
  }
  std::printf(
      "mlperf checkpointing: %d ranks x %.1f MiB (%.3f GiB), %d saves and loads per run, "
      "%d run(s): median (min-max)\n",
      c.ranks, static_cast<double>(per_rank) / (1 << 20), static_cast<double>(total) / gib, c.saves,
      c.runs);
  std::printf("  method: %s\n", method.c_str());
  std::printf("  machine: %s\n", machine_line(c.dir).c_str());
  std::printf("  save: slowest rank %s s, min rank %s GiB/s, aggregate %s GiB/s\n",
              describe(summarize(save_slowest_s), "%.3f").c_str(),
              describe(summarize(min_save), "%.3f").c_str(),
              describe(summarize(agg_save), "%.3f").c_str());
  std::printf("  load: slowest rank %s s, min rank %s GiB/s, aggregate %s GiB/s\n",
              describe(summarize(load_slowest_s), "%.3f").c_str(),
              describe(summarize(min_load), "%.3f").c_str(),
              describe(summarize(agg_load), "%.3f").c_str());
  if (!fio_w.empty() && !fio_r.empty()) {
    std::printf("  fio x%d: write %s GiB/s, read %s GiB/s\n", c.ranks,
                describe(summarize(fio_w), "%.3f").c_str(),
                describe(summarize(fio_r), "%.3f").c_str());
    std::printf("  aggregate vs fio (per run): save x%s, load x%s\n",
                describe(summarize(ratio_w)).c_str(), describe(summarize(ratio_r)).c_str());
  } else {
    std::printf("  fio: %s\n", fio_note.c_str());
  }
  std::printf("  peak RSS (largest rank): %s MiB\n", describe(summarize(peak), "%.0f").c_str());
  return 0;
}

}  // namespace

ckpt::perf::register_command mlperf_cmd(
    "mlperf", "MLPerf Storage checkpointing: R ranks x N bytes against fio --numjobs=R",
    mlperf_main);
ckpt::perf::register_command mlperf_worker_cmd("mlperf-worker",
                                               "(internal) one rank of `mlperf`, under mpirun",
                                               mlperf_worker_main);

}  // namespace ckpt::perf
