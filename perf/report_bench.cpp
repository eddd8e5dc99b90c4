// ckpt-perf report: the standard set, written as perf/results/<YYYY-MM-DD>.json and a chart.
//
//   ckpt-perf report --dir DIR [--quick] [--runs N] [--out perf/results]
//
// The set: save and load of the four WORKLOADS.md trees (each run alternated with the raw
// O_DIRECT io_uring baseline and fio when installed), then `train` on dense with 200 ms steps
// and a checkpoint every 10 steps, borrowed and shared leaves. --quick: one run each and 25
// training steps (two checkpoints) instead of 3 runs and 45 steps (four checkpoints).
// The chart (gnuplot, <date>.svg; <date>.png too when gnuplot has pngcairo): panel 1 save and
// load GiB/s beside the raw write/read of the same bytes per workload; panel 2 the checkpoint
// stall (median, max) beside the memcpy of the tree, borrowed and shared. The .dat and .gp
// files it plots from are left beside it. Without gnuplot the JSON is still written.
#include "bench_util.hpp"
#include "benches.hpp"
#include "perf.hpp"
#include "workloads.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace {

namespace fs = std::filesystem;
using ckpt::perf::gib;

double num(const boost::json::object& j, std::string_view k) {
  auto* v = j.if_contains(k);
  return v && v->is_number() ? v->to_number<double>() : 0.0;
}

std::string today() {
  std::time_t t = std::time(nullptr);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::localtime(&t));
  return buf;
}

bool have_gnuplot() {
  return std::system("command -v gnuplot >/dev/null 2>&1") == 0;
}
bool gnuplot_has_pngcairo() {
  return std::system("gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo") == 0;
}

/// Writes <base>.dat and <base>.gp and runs gnuplot for <base>.svg (and .png); returns a note.
std::string chart(const fs::path& base, const boost::json::array& saves,
                  const boost::json::array& loads, const boost::json::array& trains,
                  std::string title) {
  for (auto& ch : title)
    if (ch == '"' || ch == '\'' || ch == '\\') ch = ' ';
  std::ofstream dat(base.string() + ".dat");
  // Block 0-3: save, raw write, load, raw read bars: x value.
  const double off[4] = {-0.3, -0.1, 0.1, 0.3};
  const char* keys[4] = {"save_gibps", "raw_write_gibps", "load_gibps", "raw_read_gibps"};
  for (int k = 0; k < 4; ++k) {
    const auto& src = k < 2 ? saves : loads;
    dat << "# " << keys[k] << "\n";
    for (std::size_t i = 0; i < src.size(); ++i)
      dat << i + off[k] << " " << num(src[i].as_object(), keys[k]) << "\n";
    dat << "\n\n";
  }
  // Block 4-7: stall median, stall max, capture CPU / threads, memcpy per leaf mode.
  const double off2[4] = {-0.3, -0.1, 0.1, 0.3};
  const char* keys2[4] = {"stall_ms_median", "stall_ms_max", "stall_cpu_over_threads_ms",
                          "memcpy_ms"};
  for (int k = 0; k < 4; ++k) {
    dat << "# " << keys2[k] << "\n";
    for (std::size_t i = 0; i < trains.size(); ++i)
      dat << i + off2[k] << " " << num(trains[i].as_object(), keys2[k]) << "\n";
    dat << "\n\n";
  }
  dat.close();
  std::string xt1, xt2;
  for (std::size_t i = 0; i < saves.size(); ++i) {
    xt1 += (i ? ", \"" : "\"") + std::string(saves[i].as_object().at("workload").as_string()) +
           "\" " + std::to_string(i);
  }
  for (std::size_t i = 0; i < trains.size(); ++i) {
    xt2 += (i ? ", \"" : "\"") + std::string(trains[i].as_object().at("leaf_mode").as_string()) +
           " leaves\" " + std::to_string(i);
  }
  const std::string d = base.filename().string() + ".dat";
  std::ofstream gp(base.string() + ".gp");
  gp << "# ckpt-perf report chart; run from this folder: gnuplot " << base.filename().string()
     << ".gp\n"
     << "if (!exists(\"term\")) term = 'svg'\n"
     << "if (term eq 'svg') set terminal svg size 1200,540 dynamic font 'Helvetica,13' "
        "background rgb 'white'; else set terminal pngcairo size 1200,540 font 'Helvetica,11'\n"
     << "if (!exists(\"out\")) out = '" << base.filename().string() << ".svg'\n"
     << "set output out\n"
     << "set multiplot layout 1,2 title \"" << title << "\"\n"
     << "set style fill solid 0.85 border -1\nset boxwidth 0.19\nset grid ytics\n"
     << "set key top right\nset yrange [0:*]\n"
     << "set title 'Throughput vs the raw device (same bytes, same run)'\n"
     << "set ylabel 'GiB/s'\nset xrange [-0.6:" << saves.size() - 0.4 << "]\n"
     << "set xtics (" << xt1 << ")\nset offsets 0,0,graph 0.12,0\n"
     << "plot '" << d << "' index 0 with boxes lc rgb '#1f77b4' title 'save', "
     << "'' index 1 with boxes lc rgb '#aec7e8' title 'raw write', "
     << "'' index 2 with boxes lc rgb '#d62728' title 'load', "
     << "'' index 3 with boxes lc rgb '#ff9896' title 'raw read', "
     << "for [i=0:3] '' index i using 1:2:(sprintf('%.2f',$2)) with labels offset 0,0.6 "
        "font ',9' notitle\n"
     << "set title 'Checkpoint stall of the training loop vs a memcpy of the tree'\n"
     << "set ylabel 'ms (log scale)'\nset logscale y\nset yrange [0.5:*]\nset boxwidth 0.19\n"
     << "set offsets 0,0,graph 0.08,0\nset xrange [-0.6:" << trains.size() - 0.4 << "]\n"
     << "set xtics (" << xt2 << ")\n";
  // The targets: 1.2 x memcpy for borrowed leaves, 2 ms for shared ones.
  for (std::size_t i = 0; i < trains.size(); ++i) {
    const auto& t = trains[i].as_object();
    const bool borrowed = t.at("leaf_mode").as_string() == "borrowed";
    const double y = borrowed ? 1.2 * num(t, "memcpy_ms") : 2.0;
    gp << "set arrow from " << i - 0.45 << "," << y << " to " << i + 0.45 << "," << y
       << " nohead lw 2 dt 2 lc rgb '#d62728' front\n"
       << "set label '" << (borrowed ? "target 1.2 x memcpy" : "target 2 ms") << "' at " << i - 0.44
       << "," << y * 1.35 << " font ',10' tc rgb '#d62728' front\n";
  }
  gp << "plot '" << d << "' index 4 with boxes lc rgb '#2ca02c' title 'stall (median)', "
     << "'' index 5 with boxes lc rgb '#98df8a' title 'stall (max)', "
     << "'' index 6 with boxes lc rgb '#9467bd' title 'capture CPU-ms / encoder threads', "
     << "'' index 7 with boxes lc rgb '#7f7f7f' title 'memcpy of the tree (1 thread)', "
     << "for [i=4:7] '' index i using 1:2:(sprintf('%.1f',$2)) with labels offset 0,0.6 "
        "font ',9' notitle\n"
     << "unset multiplot\n";
  gp.close();
  if (!have_gnuplot()) return "gnuplot not installed: chart not drawn (data in .dat/.gp)";
  const std::string dir = base.parent_path().string();
  const std::string name = base.filename().string();
  std::string cmd = "cd '" + dir + "' && gnuplot '" + name + ".gp'";
  if (std::system(cmd.c_str()) != 0) return "gnuplot failed";
  std::string note = "chart " + base.string() + ".svg";
  if (gnuplot_has_pngcairo()) {
    cmd = "cd '" + dir + "' && gnuplot -e \"term='png'; out='" + name + ".png'\" '" + name + ".gp'";
    if (std::system(cmd.c_str()) == 0) note += " and .png";
  }
  return note;
}

int report_main(int argc, char** argv) {
  std::string dir, out = "perf/results";
  std::string replot;  // an existing <date>.json: redraw its chart only
  bool quick = false;
  int runs = 0;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--out" && i + 1 < argc) {
      out = argv[++i];
    } else if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--replot" && i + 1 < argc) {
      replot = argv[++i];
    } else if (a == "--quick") {
      quick = true;
    } else {
      dir.clear();
      break;
    }
  }
  if (!replot.empty()) {
    std::ifstream f(replot);
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    boost::json::error_code ec;
    auto v = boost::json::parse(text, ec);
    if (ec || !v.is_object()) {
      std::fprintf(stderr, "ckpt-perf report: %s: not a report JSON\n", replot.c_str());
      return 1;
    }
    const auto& r = v.as_object();
    fs::path base = fs::path(replot).replace_extension();
    std::string title = r.contains("chart_title")
                            ? std::string(r.at("chart_title").as_string())
                            : "ckpt-perf " + std::string(r.at("date").as_string());
    std::printf("%s\n", chart(base, r.at("save").as_array(), r.at("load").as_array(),
                              r.at("train").as_array(), title)
                            .c_str());
    return 0;
  }
  if (dir.empty()) {
    std::fprintf(stderr,
                 "usage: ckpt-perf report --dir DIR [--quick] [--runs N] [--out perf/results]\n"
                 "       ckpt-perf report --replot perf/results/<date>.json\n");
    return 2;
  }
  if (runs == 0) runs = quick ? 1 : 3;
  fs::create_directories(out);
  fs::create_directories(dir);
  const double load_before = ckpt::perf::load_average();
  boost::json::array saves, loads, trains;
  for (auto w : ckpt::perf::workload_names) {
    auto t = ckpt::perf::make_workload(w);
    if (!t) {
      std::fprintf(stderr, "ckpt-perf report: %s\n", t.error().what().c_str());
      return 1;
    }
    ckpt::perf::save_load_config c{.workload = std::string(w), .dir = dir, .runs = runs};
    auto s = ckpt::perf::bench_save(c, t.value());
    if (!s) {
      std::fprintf(stderr, "ckpt-perf report: save %s: %s\n", c.workload.c_str(),
                   s.error().what().c_str());
      return 1;
    }
    ckpt::perf::print_save(s.value());
    auto l = ckpt::perf::bench_load(c, t.value());
    if (!l) {
      std::fprintf(stderr, "ckpt-perf report: load %s: %s\n", c.workload.c_str(),
                   l.error().what().c_str());
      return 1;
    }
    ckpt::perf::print_load(l.value());
    std::fflush(stdout);
    saves.push_back(std::move(s).value());
    loads.push_back(std::move(l).value());
  }
  {
    const std::uint64_t base_rss = ckpt::perf::rss_bytes();
    auto t = ckpt::perf::make_workload("dense");
    if (!t) return 1;
    for (auto m : {ckpt::perf::leaf_mode::borrowed, ckpt::perf::leaf_mode::shared}) {
      ckpt::perf::train_config c;
      c.base_rss = base_rss;
      c.dir = dir;
      c.steps = quick ? 25 : 45;
      c.runs = runs;
      c.mode = m;
      auto j = ckpt::perf::bench_train(c, t.value());
      if (!j) {
        std::fprintf(stderr, "ckpt-perf report: train: %s\n", j.error().what().c_str());
        return 1;
      }
      ckpt::perf::print_train(j.value());
      std::fflush(stdout);
      trains.push_back(std::move(j).value());
    }
  }
  const std::string date = today();
  const fs::path base = fs::path(out) / date;
  const std::string machine = ckpt::perf::machine_line(dir);
  boost::json::object report{
      {"date", date},
      {"quick", quick},
      {"runs", runs},
      {"machine", ckpt::perf::machine_facts(dir)},
      {"machine_line", machine},
      {"load_average_1m", {{"before", load_before}, {"after", ckpt::perf::load_average()}}},
      {"method",
       "save: durable save_blocking of owned leaves after a 2x pre-fault, call -> commit; "
       "load: cold restore into pre-touched buffers, checksums verified; each run preceded by "
       "the raw O_DIRECT io_uring baseline (4 MiB x32, same bytes) and fio when installed; "
       "figures are medians over runs with min/max; train: see train.method"},
      {"save", saves},
      {"load", loads},
      {"train", trains}};
  char loads_note[96];
  std::snprintf(loads_note, sizeof loads_note, "; median of %d run(s); load avg %.1f -> %.1f", runs,
                load_before, ckpt::perf::load_average());
  const std::string title = "ckpt-perf " + date + " - " + machine + loads_note;
  report["chart_title"] = title;
  {
    std::ofstream f(base.string() + ".json");
    f << boost::json::serialize(report) << "\n";
  }
  std::string note = chart(base, saves, loads, trains, title);
  std::printf("report: %s.json; %s\n", base.string().c_str(), note.c_str());
  return 0;
}

ckpt::perf::register_command report_cmd("report",
                                        "standard set -> perf/results/<date>.json + chart",
                                        report_main);

}  // namespace
