// ckpt-perf mlperf: the MLPerf Storage checkpointing pattern. R ranks (default 8) each hold
// `--per-rank` bytes (default 256 MiB) of a model's state, save them as one sharded
// checkpoint, and load them back; the figures are set against fio with --numjobs=R writing and
// reading the same bytes per job in the same folder, run by run in turn.
//
//   ckpt-perf mlperf --dir DIR [--ranks 8] [--per-rank 256MiB] [--leaves 8] [--runs 3]
//                    [--threads] [--json] [--mpirun PATH]
//
// Method: the state is `--leaves` f32 arrays [rows, 1024], incompressible, split by rows
// across the ranks (row_slice). Each run is one MPI job (`mpirun --oversubscribe -np R
// ckpt-perf mlperf-worker`; threads of one process on an in-memory coordinator group without
// MPI or with --threads). A rank builds and pre-faults its slices and staging (untimed), waits
// at a barrier and times save_sharded_blocking: `own` is the time until its own part was
// durable (its rank checkpoint committed), `save` until the whole checkpoint was (the global
// commit). After a barrier, rank 0 drops the page cache; after another, every rank times
// load_sharded_blocking of its own slices into fresh memory. Reported, medians over runs:
//  - min-rank save GiB/s = per-rank bytes / the slowest rank's `own` time (MLPerf's per-rank
//    figure), aggregate save GiB/s = all bytes / the slowest rank's `save` time;
//  - min-rank and aggregate load GiB/s the same way from the load times;
//  - fio: aggregate GiB/s of --numjobs=R --size=per-rank (O_DIRECT io_uring, bs 4M, iodepth 16,
//    end_fsync on writes), and ckpt's aggregate as a ratio of it, per run;
//  - peak RSS: the largest rank's VmHWM (MPI) or the process's (threads), reset after the
//    pre-faulting: the rank's state, its reserved staging, and what its save and load add.
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
  std::uint64_t per_rank = 256ull << 20;
  int leaves = 8;
  int runs = 3;
  bool json = false;
  bool threads = false;
  std::string mpirun =
#ifdef CKPT_MPIEXEC
      CKPT_MPIEXEC;
#else
      "mpirun";
#endif
};

constexpr std::int64_t row_elems = 1024;  // f32: 4 KiB rows

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

ckpt::shape global_shape(const mlperf_config& c) {
  const std::int64_t rows_per_rank = std::max<std::int64_t>(
      1, static_cast<std::int64_t>(c.per_rank / static_cast<std::uint64_t>(c.leaves) /
                                   (row_elems * 4)));
  return {rows_per_rank * c.ranks, row_elems};
}

std::string leaf_path(int l) {
  return "layers/" + std::to_string(l) + "/w";
}

// Rank `rank`'s slices, filled with incompressible bytes.
std::vector<sharded_leaf> make_slices(const mlperf_config& c, int rank) {
  std::vector<sharded_leaf> out;
  for (int l = 0; l < c.leaves; ++l) {
    sharded_leaf leaf;
    leaf.path = leaf_path(l);
    leaf.dtype = dtype::f32;
    leaf.global_shape = global_shape(c);
    const slice s = row_slice(leaf.global_shape, rank, c.ranks);
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

// What one rank measured.
struct rank_times {
  double own_s = 0;   // its own part durable
  double save_s = 0;  // the whole checkpoint committed
  double load_s = 0;  // its slices loaded
  std::uint64_t bytes = 0;
  std::uint64_t peak_rss = 0;
};

boost::json::object to_json(const rank_times& t) {
  return {{"own_s", t.own_s},
          {"save_s", t.save_s},
          {"load_s", t.load_s},
          {"bytes", t.bytes},
          {"peak_rss", t.peak_rss}};
}
rank_times times_from_json(const boost::json::value& v) {
  const auto& o = v.as_object();
  return {o.at("own_s").to_number<double>(), o.at("save_s").to_number<double>(),
          o.at("load_s").to_number<double>(), o.at("bytes").to_number<std::uint64_t>(),
          o.at("peak_rss").to_number<std::uint64_t>()};
}

// One rank: build, warm up, barrier, timed save; barrier, cache dropped, barrier, timed load.
// Rank 0 returns every rank's times (gathered), the others their own.
result<std::vector<rank_times>> rank_main(const mlperf_config& c, std::shared_ptr<coordinator> co,
                                          const std::string& name) {
  auto leaves = make_slices(c, co->rank());
  tree local = tree::dict();
  rank_times t;
  std::vector<sharded_leaf> wanted;
  for (const auto& l : leaves) {
    local.set(l.path, tree::list({l.shards[0].data}));
    t.bytes += l.shards[0].data.num_bytes();
    CKPT_TRY(auto spec, sharded_leaf::spec(l.path, l.dtype, l.global_shape, {l.shards[0].where}));
    wanted.push_back(std::move(spec));
  }
  (void)reserve_staging(local);  // a training job does this once at start-up
  prefault(2 * t.bytes);         // the load's fresh arrays too
  const fs::path path = fs::path(c.dir) / name;
  // Peak RSS from here: the rank's state, its staging and what save and load add (not the
  // pre-faulting, which touches memory only to free it).
  CKPT_TRY(co->barrier());
  (void)reset_peak_rss();
  CKPT_TRY(co->barrier());
  const auto t0 = clock_type::now();
  CKPT_TRY(auto st, save_sharded_blocking(co, path, std::move(leaves), {{"bench", "mlperf"}}));
  t.save_s = seconds_since(t0);
  t.own_s = st.local_s;
  local = tree();

  CKPT_TRY(co->barrier());
  if (co->rank() == 0) (void)drop_page_cache();
  CKPT_TRY(co->barrier());
  const auto t1 = clock_type::now();
  CKPT_TRY(auto got, load_sharded_blocking(path, std::move(wanted)));
  t.load_s = seconds_since(t1);
  (void)got;
  t.peak_rss = peak_rss_bytes();

  CKPT_TRY(co->barrier());
  if (co->rank() == 0) {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  CKPT_TRY(auto all, co->gather(boost::json::serialize(to_json(t)), 0));
  std::vector<rank_times> out;
  if (co->rank() == 0) {
    for (const auto& s : all)
      out.push_back(times_from_json(boost::json::parse(s)));
  } else {
    out.push_back(t);
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
    if (a == "--dir") {
      c.dir = next();
    } else if (a == "--per-rank") {
      auto b = parse_bytes(next());
      if (!b || *b < (4u << 10)) throw std::invalid_argument("--per-rank: a byte count >= 4K");
      c.per_rank = *b;
    } else if (a == "--ranks") {
      c.ranks = std::max(1, std::stoi(next()));
    } else if (a == "--leaves") {
      c.leaves = std::max(1, std::stoi(next()));
    } else if (a == "--runs") {
      c.runs = std::max(1, std::stoi(next()));
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

std::string self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("ckpt-perf") : p.string();
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char ch : s)
    out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

// One run as an MPI job; rank 0's JSON line carries every rank's times.
result<std::vector<rank_times>> run_mpi(const mlperf_config& c, int run) {
  const std::string cmd =
      quote(c.mpirun) + " --oversubscribe --allow-run-as-root -np " + std::to_string(c.ranks) +
      " " + quote(self_exe()) + " mlperf-worker --dir " + quote(c.dir) + " --ranks " +
      std::to_string(c.ranks) + " --per-rank " + std::to_string(c.per_rank) + " --leaves " +
      std::to_string(c.leaves) + " --name ckpt-perf-mlperf-" + std::to_string(run) + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return fail(errc::invalid_argument, "cannot run " + c.mpirun);
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  const int status = ::pclose(p);
  const auto at = out.rfind("{\"ranks\":");
  if (status != 0 || at == std::string::npos) {
    return fail(errc::aborted, "the " + std::to_string(c.ranks) + "-rank job failed:\n" + out);
  }
  boost::json::error_code ec;
  auto v = boost::json::parse(out.substr(at, out.find('\n', at) - at), ec);
  if (ec) return fail(errc::aborted, "unexpected worker output:\n" + out);
  std::vector<rank_times> all;
  for (const auto& r : v.at("ranks").as_array())
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

double max_of(const std::vector<rank_times>& v, double rank_times::*field) {
  double m = 0;
  for (const auto& t : v)
    m = std::max(m, t.*field);
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
  const auto shape = global_shape(c);
  const std::uint64_t per_rank = static_cast<std::uint64_t>(shape[0] / c.ranks) *
                                 static_cast<std::uint64_t>(row_elems) * 4 *
                                 static_cast<std::uint64_t>(c.leaves);
  const std::uint64_t total = per_rank * static_cast<std::uint64_t>(c.ranks);
  std::vector<double> min_save, agg_save, min_load, agg_load, fio_w, fio_r, ratio_w, ratio_r, peak;
  std::string fio_note;
  for (int run = 0; run < c.runs; ++run) {
    auto s = c.threads ? run_threads(c, run) : run_mpi(c, run);
    if (!s) {
      std::fprintf(stderr, "ckpt-perf mlperf: %s\n", s.error().what().c_str());
      return 1;
    }
    const auto& all = s.value();
    min_save.push_back(static_cast<double>(per_rank) / max_of(all, &rank_times::own_s) / gib);
    agg_save.push_back(static_cast<double>(total) / max_of(all, &rank_times::save_s) / gib);
    min_load.push_back(static_cast<double>(per_rank) / max_of(all, &rank_times::load_s) / gib);
    agg_load.push_back(static_cast<double>(total) / max_of(all, &rank_times::load_s) / gib);
    std::uint64_t pk = 0;
    for (const auto& t : all)
      pk = std::max(pk, t.peak_rss);
    peak.push_back(static_cast<double>(pk));
    auto w = fio_gibps(c.dir, per_rank, true, &fio_note, c.ranks);
    auto r = fio_gibps(c.dir, per_rank, false, &fio_note, c.ranks);
    if (w) {
      fio_w.push_back(*w);
      ratio_w.push_back(agg_save.back() / *w);
    }
    if (r) {
      fio_r.push_back(*r);
      ratio_r.push_back(agg_load.back() / *r);
    }
    if (!c.json) {
      std::fprintf(stderr,
                   "  run %d: save %.3f GiB/s aggregate (min rank %.3f), load %.3f (min rank "
                   "%.3f); fio x%d write %s, read %s GiB/s\n",
                   run + 1, agg_save.back(), min_save.back(), agg_load.back(), min_load.back(),
                   c.ranks, w ? std::to_string(*w).c_str() : "-",
                   r ? std::to_string(*r).c_str() : "-");
    }
  }
  const std::string method =
      std::string(
          "R ranks each save their rows of f32 leaves (incompressible) as one sharded "
          "checkpoint, then load them after a page-cache drop; min-rank = per-rank "
          "bytes / the slowest rank's time (save: until its own part was durable), "
          "aggregate = all bytes / the slowest rank's time (save: until the global "
          "commit); fio --numjobs=R --size=per-rank O_DIRECT io_uring bs 4M iodepth 16 "
          "(end_fsync on writes) in the same folder, alternated run by run; ") +
      (c.threads ? "ranks are threads of one process" : "ranks are MPI processes");
  auto opt = [](const std::vector<double>& v) -> boost::json::value {
    if (v.empty()) return nullptr;
    return to_json(summarize(v));
  };
  boost::json::object j{{"bench", "mlperf"},
                        {"method", method},
                        {"ranks", c.ranks},
                        {"per_rank_bytes", per_rank},
                        {"leaves", c.leaves},
                        {"runs", c.runs},
                        {"save_min_rank_gibps", to_json(summarize(min_save))},
                        {"save_aggregate_gibps", to_json(summarize(agg_save))},
                        {"load_min_rank_gibps", to_json(summarize(min_load))},
                        {"load_aggregate_gibps", to_json(summarize(agg_load))},
                        {"fio_write_gibps", opt(fio_w)},
                        {"fio_read_gibps", opt(fio_r)},
                        {"save_vs_fio", opt(ratio_w)},
                        {"load_vs_fio", opt(ratio_r)},
                        {"peak_rss_bytes", to_json(summarize(peak))},
                        {"machine", machine_facts(c.dir)}};
  if (fio_w.empty() || fio_r.empty()) j["fio_note"] = fio_note;
  if (c.json) {
    std::printf("%s\n", boost::json::serialize(j).c_str());
    return 0;
  }
  std::printf(
      "mlperf checkpointing: %d ranks x %.1f MiB (%.3f GiB), %d leaves, %d run(s): "
      "median (min-max)\n",
      c.ranks, static_cast<double>(per_rank) / (1 << 20), static_cast<double>(total) / gib,
      c.leaves, c.runs);
  std::printf("  method: %s\n", method.c_str());
  std::printf("  machine: %s\n", machine_line(c.dir).c_str());
  std::printf("  save: aggregate %s GiB/s, min rank %s GiB/s\n",
              describe(summarize(agg_save), "%.3f").c_str(),
              describe(summarize(min_save), "%.3f").c_str());
  std::printf("  load: aggregate %s GiB/s, min rank %s GiB/s\n",
              describe(summarize(agg_load), "%.3f").c_str(),
              describe(summarize(min_load), "%.3f").c_str());
  if (!fio_w.empty() && !fio_r.empty()) {
    std::printf("  fio x%d: write %s GiB/s, read %s GiB/s\n", c.ranks,
                describe(summarize(fio_w), "%.3f").c_str(),
                describe(summarize(fio_r), "%.3f").c_str());
    std::printf("  aggregate vs fio (per run): save x%s, load x%s\n",
                describe(summarize(ratio_w)).c_str(), describe(summarize(ratio_r)).c_str());
  } else {
    std::printf("  fio: %s\n", fio_note.c_str());
  }
  std::printf("  peak RSS (largest rank): %s MiB\n", describe(summarize([&] {
                                                                std::vector<double> m;
                                                                for (double p : peak)
                                                                  m.push_back(p / (1 << 20));
                                                                return m;
                                                              }()),
                                                              "%.0f")
                                                         .c_str());
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
