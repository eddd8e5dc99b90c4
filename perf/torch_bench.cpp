// ckpt-perf torch: libtorch state saved and loaded with libtorch's own serializer
// (torch::serialize::OutputArchive / InputArchive, what torch::save / torch::load use) and
// with ckpt, alternated in one run, both durable.
//
//   ckpt-perf torch [--dir DIR] [--runs N] [--big BYTES] [--no-fio] [--default-allocator] [--json]
//
// States: "example", the state of ckpt-torch-train (its MLP's parameters and AdamW moments after
// one step: 3.2 M parameters x 3, 36 MiB), and "big", f32 tensors of 64 MiB each adding up to
// --big (default 1 GiB) of Gaussian values.
// Method, per run and state, the order of the timed steps rotating from run to run:
//   torch save:  OutputArchive of every tensor by name, save_to(file), then fsync of the file and
//                of its directory (torch::save itself never fsyncs).
//   ckpt save:   save_blocking of a tree of borrowed leaves of the same tensors (durable: data
//                fsyncs, index, commit marker, rename and directory fsyncs); then, untimed for
//                the ratios but reported, the same with shared leaves (zero copy).
//   fio:         the same byte count, --rw=write --bs=4M --iodepth=32 --direct=1 --end_fsync=1,
//                and a cold --rw=read, the disk's baselines.
// and, after dropping the page cache (root) before each:
//   torch load:  InputArchive load_from(file), read of every tensor into the existing tensors.
//   ckpt load:   load_blocking into a template of borrowed views of the existing tensors (in
//                place, checksums verified).
// Tensors are allocated after ckpt::torch::use_page_aligned_tensors(), as ckpt-torch-train does
// (both serializers use the same tensors), unless --default-allocator keeps libtorch's 64-byte
// alignment (ckpt then copies each tensor through staging buffers).
// GiB/s = state bytes / wall time; medians over runs. Peak RSS of each step: the process's
// high-water mark reset (clear_refs) before it, read (VmHWM) after; the state itself counts.
#include "bench_util.hpp"
#include "fio.hpp"
#include "perf.hpp"
#include "workloads.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/torch.hpp>

#include <torch/torch.h>
#include <boost/json/serialize.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace ckpt::perf {

namespace {
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

using named_tensors = std::vector<std::pair<std::string, ::torch::Tensor>>;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// ckpt-torch-train's model and AdamW after one step: parameters and both moments.
named_tensors example_state() {
  using namespace ::torch::nn;
  ::torch::manual_seed(42);
  const std::int64_t in = 256, hidden = 1536, out = 256;
  Sequential body(Linear(in, hidden), LayerNorm(LayerNormOptions({hidden})), GELU(), Dropout(0.1),
                  Linear(hidden, hidden), LayerNorm(LayerNormOptions({hidden})), GELU(),
                  Dropout(0.1), Linear(hidden, out));
  ::torch::optim::AdamW opt(body->parameters(), ::torch::optim::AdamWOptions(1e-3));
  auto x = ::torch::randn({16, in});
  auto loss = ::torch::mse_loss(body->forward(x), ::torch::randn({16, out}));
  loss.backward();
  opt.step();
  named_tensors state;
  auto optim = ckpt::torch::optimizer_tree(opt, *body).value();
  const tree& st = *optim.get("adamw")->get("state");
  // Keys without dots: libtorch's archives take dotted names for nested archives.
  for (const auto& p : body->named_parameters()) {
    std::string key = p.key();
    std::replace(key.begin(), key.end(), '.', '_');
    state.emplace_back("model_" + key, p.value().detach());
    for (const char* k : {"exp_avg", "exp_avg_sq"}) {
      auto t = ckpt::torch::to_tensor(st.get(p.key())->get(k)->leaf()).value();
      state.emplace_back("optim_" + key + "_" + k, t);
    }
  }
  return state;
}

named_tensors big_state(std::uint64_t bytes) {
  ::torch::manual_seed(7);
  named_tensors state;
  const std::int64_t per = 16 << 20;  // 64 MiB of f32
  std::int64_t left = static_cast<std::int64_t>(bytes / 4);
  for (int i = 0; left > 0; ++i) {
    const std::int64_t n = std::min(per, left);
    state.emplace_back("t" + std::to_string(i), ::torch::randn({n}) * 0.02);
    left -= n;
  }
  return state;
}

std::uint64_t bytes_of(const named_tensors& s) {
  std::uint64_t n = 0;
  for (const auto& [k, t] : s)
    n += static_cast<std::uint64_t>(t.numel()) * t.element_size();
  return n;
}

tree tree_of(const named_tensors& s, bool shared = false) {
  tree t = tree::dict();
  for (const auto& [k, v] : s)
    t.set(k, (shared ? ckpt::torch::share_tensor(v) : ckpt::torch::borrow_tensor(v)).value());
  return t;
}

result<void> fsync_path(const fs::path& p, bool dir) {
  int fd = ::open(p.c_str(), (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return system_error(errno, "open " + p.string());
  int r = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (r != 0) return system_error(e, "fsync " + p.string());
  return success();
}

struct figures {
  std::vector<double> torch_save, ckpt_save, ckpt_save_shared, fio_write, fio_read, torch_load,
      ckpt_load;
  std::uint64_t rss_torch_save = 0, rss_ckpt_save = 0, rss_torch_load = 0, rss_ckpt_load = 0;
  save_stats last_ckpt_save;  // of borrowed leaves, the last run's
  std::string fio_note;
};

result<boost::json::object> bench_state(const std::string& name, named_tensors& state,
                                        const std::string& dir, int runs, bool use_fio) {
  const std::uint64_t bytes = bytes_of(state);
  const double gb = static_cast<double>(bytes) / gib;
  const fs::path torch_file = fs::path(dir) / ("torch-" + name + ".pt");
  const fs::path ckpt_dir = fs::path(dir) / ("ckpt-" + name);
  figures f;
  for (int r = 0; r < runs; ++r) {
    auto torch_save = [&]() -> result<void> {
      fs::remove(torch_file);
      reset_peak_rss();
      const auto t0 = clock_type::now();
      try {
        ::torch::serialize::OutputArchive ar;
        for (const auto& [k, v] : state)
          ar.write(k, v);
        ar.save_to(torch_file.string());
      } catch (const std::exception& e) {
        return fail(errc::invalid_argument, std::string("torch save: ") + e.what());
      }
      CKPT_TRY(fsync_path(torch_file, false));
      CKPT_TRY(fsync_path(dir, true));
      f.torch_save.push_back(gb / seconds_since(t0));
      f.rss_torch_save = std::max(f.rss_torch_save, peak_rss_bytes());
      return success();
    };
    auto ckpt_save = [&]() -> result<void> {
      fs::remove_all(ckpt_dir);
      const tree t = tree_of(state);  // (a torch load may have given the tensors new storage)
      reset_peak_rss();
      const auto t0 = clock_type::now();
      CKPT_TRY(f.last_ckpt_save, save_blocking(ckpt_dir, t, {{"state", name}}));
      f.ckpt_save.push_back(gb / seconds_since(t0));
      f.rss_ckpt_save = std::max(f.rss_ckpt_save, peak_rss_bytes());
      // The same save of shared leaves (zero copy: written straight from the tensors, which
      // must then not change until committed), for comparison.
      fs::remove_all(ckpt_dir);
      const tree ts = tree_of(state, true);
      const auto t1 = clock_type::now();
      CKPT_TRY(save_blocking(ckpt_dir, ts, {{"state", name}}));
      f.ckpt_save_shared.push_back(gb / seconds_since(t1));
      return success();
    };
    auto fio = [&]() -> result<void> {
      if (!use_fio) return success();
      if (auto g = fio_gibps(dir, bytes, true, &f.fio_note)) f.fio_write.push_back(*g);
      if (auto g = fio_gibps(dir, bytes, false, &f.fio_note)) f.fio_read.push_back(*g);
      return success();
    };
    for (int k = 0; k < 3; ++k) {
      const int step = (r + k) % 3;
      auto done = step == 0 ? torch_save() : step == 1 ? ckpt_save() : fio();
      if (!done) return fail(std::move(done).error());
    }
    auto torch_load = [&]() -> result<void> {
      drop_page_cache();
      reset_peak_rss();
      const auto t0 = clock_type::now();
      try {
        ::torch::serialize::InputArchive ar;
        ar.load_from(torch_file.string());
        ::torch::NoGradGuard no_grad;
        for (auto& [k, v] : state)
          ar.read(k, v);
      } catch (const std::exception& e) {
        return fail(errc::invalid_argument, std::string("torch load: ") + e.what());
      }
      f.torch_load.push_back(gb / seconds_since(t0));
      f.rss_torch_load = std::max(f.rss_torch_load, peak_rss_bytes());
      return success();
    };
    auto ckpt_load = [&]() -> result<void> {
      drop_page_cache();
      const tree templ = tree_of(state);  // views of the tensors (torch load may replace them)
      reset_peak_rss();
      const auto t0 = clock_type::now();
      CKPT_TRY(load_blocking(ckpt_dir, &templ));
      f.ckpt_load.push_back(gb / seconds_since(t0));
      f.rss_ckpt_load = std::max(f.rss_ckpt_load, peak_rss_bytes());
      return success();
    };
    for (int k = 0; k < 2; ++k) {
      auto done = (r + k) % 2 == 0 ? torch_load() : ckpt_load();
      if (!done) return fail(std::move(done).error());
    }
  }
  fs::remove(torch_file);
  fs::remove_all(ckpt_dir);
  const double ts = summarize(f.torch_save).median, cs = summarize(f.ckpt_save).median;
  const double tl = summarize(f.torch_load).median, cl = summarize(f.ckpt_load).median;
  boost::json::object j{{"state", name},
                        {"bytes", bytes},
                        {"tensors", state.size()},
                        {"runs", runs},
                        {"torch_save_gibps", to_json(summarize(f.torch_save))},
                        {"ckpt_save_gibps", to_json(summarize(f.ckpt_save))},
                        {"ckpt_save_shared_gibps", to_json(summarize(f.ckpt_save_shared))},
                        {"torch_load_gibps", to_json(summarize(f.torch_load))},
                        {"ckpt_load_gibps", to_json(summarize(f.ckpt_load))},
                        {"ckpt_stored_bytes", f.last_ckpt_save.stored_bytes},
                        {"ckpt_direct_bytes", f.last_ckpt_save.direct_bytes},
                        {"ckpt_save_phases_s",
                         {{"written", f.last_ckpt_save.written_s},
                          {"fsync", f.last_ckpt_save.fsync_s},
                          {"commit", f.last_ckpt_save.commit_s}}},
                        {"save_ratio_vs_torch", cs / ts},
                        {"load_ratio_vs_torch", cl / tl},
                        {"peak_rss_bytes",
                         {{"torch_save", f.rss_torch_save},
                          {"ckpt_save", f.rss_ckpt_save},
                          {"torch_load", f.rss_torch_load},
                          {"ckpt_load", f.rss_ckpt_load}}}};
  if (!f.fio_write.empty()) {
    const double fw = summarize(f.fio_write).median;
    j["fio_write_gibps"] = to_json(summarize(f.fio_write));
    j["save_ratio_vs_fio"] = cs / fw;
  }
  if (!f.fio_read.empty()) {
    const double fr = summarize(f.fio_read).median;
    j["fio_read_gibps"] = to_json(summarize(f.fio_read));
    j["load_ratio_vs_fio"] = cl / fr;
  } else if (use_fio) {
    j["fio_note"] = f.fio_note;
  }
  return j;
}

void print_state(const boost::json::object& j) {
  auto med = [&](const char* k) { return j.at(k).as_object().at("median").to_number<double>(); };
  auto mib = [&](const char* k) {
    return j.at("peak_rss_bytes").as_object().at(k).to_number<double>() / (1 << 20);
  };
  std::printf("%s: %.1f MiB in %lld tensors (%lld on a page boundary), %lld run(s), medians\n",
              j.at("state").as_string().c_str(), j.at("bytes").to_number<double>() / (1 << 20),
              static_cast<long long>(j.at("tensors").to_number<std::int64_t>()),
              static_cast<long long>(j.at("page_aligned_tensors").to_number<std::int64_t>()),
              static_cast<long long>(j.at("runs").to_number<std::int64_t>()));
  std::printf(
      "  save  torch %.2f GiB/s (peak RSS %.0f MiB)   ckpt %.2f GiB/s (peak RSS %.0f MiB)"
      "   ckpt/torch %.2fx\n",
      med("torch_save_gibps"), mib("torch_save"), med("ckpt_save_gibps"), mib("ckpt_save"),
      j.at("save_ratio_vs_torch").to_number<double>());
  std::printf(
      "  save  ckpt, shared leaves (zero copy) %.2f GiB/s; ckpt stored %.1f%% of the bytes, "
      "wrote %.1f%% from the tensors' memory\n",
      med("ckpt_save_shared_gibps"),
      100.0 * j.at("ckpt_stored_bytes").to_number<double>() / j.at("bytes").to_number<double>(),
      100.0 * j.at("ckpt_direct_bytes").to_number<double>() / j.at("bytes").to_number<double>());
  const auto& ph = j.at("ckpt_save_phases_s").as_object();
  std::printf(
      "  save  ckpt phases (last run): data written at %.1f ms, fsyncs %.1f ms, commit %.1f ms\n",
      1e3 * ph.at("written").to_number<double>(), 1e3 * ph.at("fsync").to_number<double>(),
      1e3 * ph.at("commit").to_number<double>());
  if (j.contains("fio_write_gibps")) {
    std::printf("  fio write %.2f GiB/s   ckpt/fio %.2fx\n", med("fio_write_gibps"),
                j.at("save_ratio_vs_fio").to_number<double>());
  } else if (j.contains("fio_note")) {
    std::printf("  fio unavailable: %s\n", j.at("fio_note").as_string().c_str());
  }
  std::printf(
      "  load  torch %.2f GiB/s (peak RSS %.0f MiB)   ckpt %.2f GiB/s (peak RSS %.0f MiB)"
      "   ckpt/torch %.2fx\n",
      med("torch_load_gibps"), mib("torch_load"), med("ckpt_load_gibps"), mib("ckpt_load"),
      j.at("load_ratio_vs_torch").to_number<double>());
  if (j.contains("fio_read_gibps")) {
    std::printf("  fio read %.2f GiB/s   ckpt/fio %.2fx\n", med("fio_read_gibps"),
                j.at("load_ratio_vs_fio").to_number<double>());
  } else if (j.contains("fio_note")) {
    std::printf("  fio read unavailable: %s\n", j.at("fio_note").as_string().c_str());
  }
}

int torch_main(int argc, char** argv) {
  std::string dir = "/work/perfdir-torch";
  int runs = 3;
  std::uint64_t big = 1ull << 30;
  bool use_fio = true, json = false, aligned = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "ckpt-perf torch: missing value for %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--dir") {
      dir = next();
    } else if (a == "--runs") {
      runs = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--big") {
      auto b = parse_bytes(next());
      if (!b) {
        std::fprintf(stderr, "ckpt-perf torch: bad --big\n");
        return 2;
      }
      big = *b;
    } else if (a == "--no-fio") {
      use_fio = false;
    } else if (a == "--default-allocator") {
      aligned = false;
    } else if (a == "--json") {
      json = true;
    } else {
      std::fprintf(stderr,
                   "usage: ckpt-perf torch [--dir DIR] [--runs N] [--big BYTES] [--no-fio] "
                   "[--default-allocator] [--json]\n");
      return 2;
    }
  }
  ::torch::set_num_threads(1);
  if (aligned) ckpt::torch::use_page_aligned_tensors();
  fs::create_directories(dir);
  boost::json::array results;
  for (const char* name : {"example", "big"}) {
    named_tensors state = std::string(name) == "example" ? example_state() : big_state(big);
    prefault(2 * bytes_of(state));
    std::size_t on_pages = 0;
    for (const auto& [k, t] : state)
      on_pages += ckpt::torch::is_page_aligned(t);
    auto j = bench_state(name, state, dir, runs, use_fio);
    if (!j) {
      std::fprintf(stderr, "ckpt-perf torch: %s: %s\n", name, j.error().what().c_str());
      return 1;
    }
    j.value()["page_aligned_tensors"] = on_pages;
    if (!json) print_state(j.value());
    results.push_back(std::move(j).value());
  }
  if (json) {
    boost::json::object out{{"bench", "torch"},
                            {"method",
                             "torch: OutputArchive save_to + fsync (file, dir) / InputArchive "
                             "load_from + read into the tensors; ckpt: save_blocking of borrowed "
                             "leaves (durable) / load_blocking in place; page cache dropped "
                             "before loads; alternated"},
                            {"page_aligned_allocator", aligned},
                            {"states", std::move(results)},
                            {"machine", machine_facts(dir)}};
    std::printf("%s\n", boost::json::serialize(out).c_str());
  } else {
    std::printf(
        "method: torch save = OutputArchive (torch::save) + fsync of file and dir; ckpt "
        "save = durable save of borrowed leaves; loads cold (page cache dropped), in place; "
        "%s; %s\n",
        aligned ? "tensors page-aligned (use_page_aligned_tensors)"
                : "libtorch's default allocator",
        machine_line(dir).c_str());
  }
  return 0;
}

}  // namespace

ckpt::perf::register_command torch_cmd("torch",
                                       "libtorch state: ::torch::save/load vs ckpt (durable, cold)",
                                       torch_main);

}  // namespace ckpt::perf
