// ckpt-inspect and ckpt::verify_checkpoint: golden outputs of every subcommand (human and
// --json) on a small deterministic checkpoint, corruption reports, .npy files checked against
// NumPy's format rules; a differential checkpoint's own and shared bytes, and consolidate.
#include "support.hpp"

#include <ckpt/coordinator.hpp>
#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/shard.hpp>
#include <ckpt/store.hpp>
#include <ckpt/verify.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#ifndef CKPT_INSPECT_BIN
#define CKPT_INSPECT_BIN ""
#endif

namespace fs = std::filesystem;
using ckpt::test::temp_dir;

namespace {

struct run_result {
  int rc = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Runs ckpt-inspect with `args` (already shell-quoted words), stdout and stderr captured.
run_result inspect(const std::string& args, const fs::path& cwd) {
  const fs::path err = cwd / "stderr.txt";
  const std::string cmd = "cd " + quote(cwd.string()) + " && NO_COLOR=1 " +
                          quote(CKPT_INSPECT_BIN) + " " + args + " 2>" + quote(err.string());
  run_result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    r.out.append(buf, n);
  int status = ::pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = slurp(err);
  return r;
}

// Volatile fields: creation times and run times; chunk offsets (the save pipeline places write
// units in completion order) with the padding of their column.
std::string normalise(std::string s) {
  s = std::regex_replace(s, std::regex(R"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)"), "TIME");
  s = std::regex_replace(s, std::regex(R"(\d+\.\d\d s, \d+\.\d\d GiB/s)"), "T s, R GiB/s");
  s = std::regex_replace(s, std::regex(R"((data-\d+\.bin) +\d+ +)"), "$1 OFF ");
  return s;
}

// A JSON document with volatile keys removed (recursively), serialised.
std::string normalise_json(const std::string& text) {
  boost::json::value v = boost::json::parse(text);
  std::function<void(boost::json::value&)> strip = [&](boost::json::value& x) {
    if (x.is_object()) {
      auto& o = x.as_object();
      for (const char* k : {"created_unix_ns", "seconds", "offset"}) {
        if (o.contains(k) && !o[k].is_null()) o[k] = "X";
      }
      for (auto& kv : o)
        strip(kv.value());
    } else if (x.is_array()) {
      for (auto& e : x.as_array())
        strip(e);
    }
  };
  strip(v);
  return boost::json::serialize(v);
}

template <class T>
ckpt::array owned(ckpt::dtype t, ckpt::shape s, const std::vector<T>& values) {
  auto a = ckpt::array::zeros(t, std::move(s)).value();
  std::memcpy(a.mutable_bytes().data(), values.data(), a.num_bytes());
  return a;
}

// The fixture tree: compressible and incompressible floats, several chunks, bf16, a list with
// None, a scalar. Deterministic data and layout (one data file, 4 KiB chunks).
ckpt::tree fixture_tree(float scale = 0.25f) {
  std::vector<float> w(64 * 32);
  for (std::size_t i = 0; i < w.size(); ++i)
    w[i] = static_cast<float>(i % 64) * scale;
  auto noise_bytes = ckpt::test::random_bytes(1024 * 4, 7);
  std::vector<float> noise(1024);
  std::memcpy(noise.data(), noise_bytes.data(), noise_bytes.size());
  for (auto& x : noise) {
    if (!std::isfinite(x)) x = 1.0f;
  }
  std::vector<std::uint16_t> b(32, 0x3f80);  // bf16 1.0
  std::vector<std::int32_t> k{1, 2, 3};
  std::vector<std::int64_t> step{7};
  return ckpt::tree::dict(
      {{"params", ckpt::tree::dict({{"w", owned(ckpt::dtype::f32, {64, 32}, w)},
                                    {"b", owned(ckpt::dtype::bf16, {32}, b)},
                                    {"noise", owned(ckpt::dtype::f32, {1024}, noise)}})},
       {"layers", ckpt::tree::list(
                      {ckpt::tree::dict({{"k", owned(ckpt::dtype::i32, {3}, k)}}), ckpt::tree()})},
       {"step", owned(ckpt::dtype::i64, {}, step)}});
}

ckpt::save_options fixture_options() {
  ckpt::save_options o;
  o.chunk_bytes = 4096;
  o.data_files = 1;
  o.job = boost::json::object{{"spec", {{"job_name", "fixture"}}}, {"config", {{"lr", 0.5}}}};
  return o;
}

void save_fixture(const fs::path& p, std::int64_t step = 7, float scale = 0.25f) {
  auto s = ckpt::save_blocking(p, fixture_tree(scale), {{"step", step}, {"note", "fixture"}},
                               fixture_options());
  REQUIRE(s);
}

// The (file offset) of chunk `ci` of leaf `path`, read from show --leaf --json.
std::uint64_t chunk_offset(const fs::path& cwd, const std::string& path, std::size_t ci) {
  auto r = inspect("show ck --leaf " + path + " --json", cwd);
  REQUIRE(r.rc == 0);
  auto v = boost::json::parse(r.out);
  return v.at("leaf").at("chunks").at(ci).at("offset").to_number<std::uint64_t>();
}

void flip_byte(const fs::path& file, std::uint64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

bool have_inspect() {
  return std::strlen(CKPT_INSPECT_BIN) > 0;
}

}  // namespace

namespace {

// A model for differential saves: "frozen" and "embed" never change (several 1 MiB chunks each),
// "head" changes with `step`.
ckpt::tree diff_model(std::uint64_t step) {
  return ckpt::tree::dict(
      {{"frozen", ckpt::test::random_array(ckpt::dtype::f32, 3 * 1024 * 1024 / 4 + 300, 1)},
       {"embed", ckpt::test::random_array(ckpt::dtype::bf16, 1024 * 1024 + 17, 2)},
       {"small", ckpt::test::random_array(ckpt::dtype::i32, 10, 3)},
       {"head", ckpt::test::random_array(ckpt::dtype::f32, 50000, 100 + step)}});
}

ckpt::save_options diff_save_options(const fs::path& base) {
  ckpt::save_options o;
  o.chunk_bytes = 1 << 20;
  o.base = base;
  o.job = boost::json::object{{"spec", {{"job_name", "diff"}}}};
  return o;
}

// job/A (full) and job/B (differential against A: only "head" changed).
void save_differential(const fs::path& job) {
  REQUIRE(ckpt::save_blocking(job / "A", diff_model(1), {{"step", 1}}, diff_save_options({})));
  auto b =
      ckpt::save_blocking(job / "B", diff_model(2), {{"step", 2}}, diff_save_options(job / "A"));
  REQUIRE(b);
  REQUIRE(b.value().shared_bytes > 4u << 20);
}

std::uint64_t json_u64(const boost::json::value& v) {
  return v.to_number<std::uint64_t>();
}

}  // namespace

// Prints the outputs the goldens below were taken from (after review): ckpt-tests
// "[.inspect-golden]".
TEST_CASE("inspect: print goldens", "[.inspect-golden]") {
  temp_dir d;
  save_fixture(d / "ck");
  save_fixture(d / "b", 8, 0.5f);
  auto t = fixture_tree();
  t.get("params")->set("extra", ckpt::array::zeros(ckpt::dtype::u8, {5}).value());
  t.get("params")->set("b", ckpt::array::zeros(ckpt::dtype::f32, {32}).value());
  t.set("step", ckpt::array::zeros(ckpt::dtype::i64, {2}).value());
  REQUIRE(ckpt::save_blocking(d / "c", t, {{"step", 7}, {"note", "fixture"}}, fixture_options()));
  const fs::path job = d / "job";
  save_fixture(job / "step_1", 1);
  save_fixture(job / "step_2", 2);
  REQUIRE(ckpt::store::write_latest(job, "step_2"));
  fs::create_directories(job / ".step_3.tmp-123-0123456789abcdef");
  fs::create_directories(job / "step_4");
  save_fixture(job / "step_10", 10);
  std::ofstream(job / "step_10" / "COMMIT", std::ios::app) << "garbage";
  for (std::string args :
       {"show ck", "show ck --json", "show ck --leaf params/w", "show ck --leaf params/w --json",
        "verify ck", "verify ck --json", "list job", "list job --json", "diff ck b",
        "diff ck b --json", "diff ck c", "diff ck c --json"}) {
    auto r = inspect(args, d.path());
    std::printf("=== %s (rc %d)\n%s", args.c_str(), r.rc,
                args.find("--json") != std::string::npos ? (normalise_json(r.out) + "\n").c_str()
                                                         : normalise(r.out).c_str());
  }
  // A differential checkpoint (the tests below check these with patterns).
  save_differential(d / "djob");
  for (std::string args : {"show djob/B", "show djob/B --json", "show djob/A", "list djob",
                           "list djob --json", "consolidate djob/B dc", "consolidate djob/B dc"}) {
    auto r = inspect(args, d.path());
    std::printf("=== %s (rc %d)\n%s%s", args.c_str(), r.rc, normalise(r.out).c_str(),
                r.err.c_str());
  }
}

TEST_CASE("inspect: fill runs are shown per leaf and per chunk", "[inspect][runs]") {
  REQUIRE(have_inspect());
  temp_dir d;
  // 16 pages: 12 of zeros, 4 of noise (format 1.2 fill runs cover 75 %).
  auto noise = ckpt::test::random_bytes(4 * 4096, 5);
  auto a = ckpt::array::zeros(ckpt::dtype::u8, {16 * 4096}).value();
  for (int pg = 0; pg < 4; ++pg)
    std::memcpy(a.mutable_bytes().data() + (4 * pg + 1) * 4096, noise.data() + pg * 4096, 4096);
  REQUIRE(ckpt::save_blocking(d / "ck", ckpt::tree::dict({{"x", a}}), {}, {}));
  auto r = inspect("show ck", d.path());
  CHECK(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("fill:75%"));
  r = inspect("show ck --leaf x --json", d.path());
  CHECK(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("\"fill_bytes\":49152"));
}

TEST_CASE("inspect: show golden", "[inspect]") {
  REQUIRE(have_inspect());
  temp_dir d;
  save_fixture(d / "ck");
  auto r = inspect("show ck", d.path());
  CHECK(r.rc == 0);
  CHECK(r.err.empty());
  CHECK(normalise(r.out) == R"(checkpoint ck
  format 1.2, created TIME

  PATH     DTYPE  SHAPE      LOGICAL   STORED  RATIO  CODECS
  params   dict   3 keys    12.1 KiB  4.2 KiB   2.85
    w      f32    [64, 32]   8.0 KiB    222 B  36.90  shuffle-lz4
    b      bf16   [32]          64 B     12 B   5.33  lz4
    noise  f32    [1024]     4.0 KiB  4.0 KiB   1.00  raw
  layers   list   2 items       12 B     12 B   1.00
    0      dict   1 key         12 B     12 B   1.00
      k    i32    [3]           12 B     12 B   1.00  raw
    1      None
  step     i64    []             8 B      8 B   1.00  raw

  total 5 leaves, 6 chunks in 1 data file; logical 12.1 KiB, stored 4.2 KiB, ratio 2.84

metadata {
  "step": 7,
  "note": "fixture"
}

job spec {
  "job_name": "fixture"
}

job config {
  "lr": 5E-1
}
)");

  r = inspect("show ck --json", d.path());
  CHECK(r.rc == 0);
  CHECK(
      normalise_json(
          r.out) == R"({"path":"ck","version":[1,2],"created_unix_ns":"X","logical_bytes":12372,"stored_bytes":20480,"ratio":2.8441379310344828E0,"num_leaves":5,"num_chunks":6,"files":[{"name":"data-00000.bin","size":20480}],"tree":{"kind":"dict","items":[["params",{"kind":"dict","items":[["w",{"kind":"leaf","leaf":0}],["b",{"kind":"leaf","leaf":1}],["noise",{"kind":"leaf","leaf":2}]]}],["layers",{"kind":"list","elements":[{"kind":"dict","items":[["k",{"kind":"leaf","leaf":3}]]},{"kind":"none"}]}],["step",{"kind":"leaf","leaf":4}]]},"leaves":[{"path":"params/w","dtype":"f32","shape":[64,32],"logical_bytes":8192,"stored_bytes":222,"ratio":3.69009009009009E1,"num_chunks":2,"codecs":{"raw":0,"lz4":0,"shuffle-lz4":2},"fill_bytes":0},{"path":"params/b","dtype":"bf16","shape":[32],"logical_bytes":64,"stored_bytes":12,"ratio":5.333333333333333E0,"num_chunks":1,"codecs":{"raw":0,"lz4":1,"shuffle-lz4":0},"fill_bytes":0},{"path":"params/noise","dtype":"f32","shape":[1024],"logical_bytes":4096,"stored_bytes":4096,"ratio":1E0,"num_chunks":1,"codecs":{"raw":1,"lz4":0,"shuffle-lz4":0},"fill_bytes":0},{"path":"layers/0/k","dtype":"i32","shape":[3],"logical_bytes":12,"stored_bytes":12,"ratio":1E0,"num_chunks":1,"codecs":{"raw":1,"lz4":0,"shuffle-lz4":0},"fill_bytes":0},{"path":"step","dtype":"i64","shape":[],"logical_bytes":8,"stored_bytes":8,"ratio":1E0,"num_chunks":1,"codecs":{"raw":1,"lz4":0,"shuffle-lz4":0},"fill_bytes":0}],"metadata":{"step":7,"note":"fixture"},"job":{"spec":{"job_name":"fixture"},"config":{"lr":5E-1}}})");

  r = inspect("show ck --leaf params/w", d.path());
  CHECK(r.rc == 0);
  CHECK(normalise(r.out) == R"(leaf params/w
  dtype f32, shape [64, 32], logical 8.0 KiB, stored 222 B, ratio 36.90, 2 chunks
  #  FILE            OFFSET  STORED   RAW  CODEC        XXH3              FILL
  0  data-00000.bin OFF 111  4096  shuffle-lz4  2cab501c0528bcc5     0
  1  data-00000.bin OFF 111  4096  shuffle-lz4  2cab501c0528bcc5     0
)");
  r = inspect("show ck --leaf params/w --json", d.path());
  CHECK(r.rc == 0);
  CHECK(
      normalise_json(r.out) ==
      R"({"path":"ck","leaf":{"path":"params/w","dtype":"f32","shape":[64,32],"logical_bytes":8192,"stored_bytes":222,"ratio":3.69009009009009E1,"num_chunks":2,"codecs":{"raw":0,"lz4":0,"shuffle-lz4":2},"fill_bytes":0,"chunks":[{"index":0,"file":"data-00000.bin","offset":"X","stored":111,"raw":4096,"codec":"shuffle-lz4","xxh3":"2cab501c0528bcc5","fill_bytes":0},{"index":1,"file":"data-00000.bin","offset":"X","stored":111,"raw":4096,"codec":"shuffle-lz4","xxh3":"2cab501c0528bcc5","fill_bytes":0}]}})");

  r = inspect("show ck --leaf params", d.path());
  CHECK(r.rc == 1);
  CHECK(r.out.empty());
  CHECK(r.err == "ckpt-inspect: \"params\" in ck is a dict, not a leaf\n");
  r = inspect("show ck --leaf nope", d.path());
  CHECK(r.rc == 1);
  CHECK(r.err == "ckpt-inspect: no leaf \"nope\" in ck\n");
}

TEST_CASE("inspect: show prints a key holding '/' escaped, as its path is written", "[inspect]") {
  REQUIRE(have_inspect());
  temp_dir d;
  auto leaf = ckpt::array::zeros(ckpt::dtype::u8, {4}).value();
  auto t = ckpt::tree::dict({{"a/b", ckpt::tree::dict({{"c~d", leaf}})}});
  REQUIRE(ckpt::save_blocking(d / "ck", t, {}));
  auto r = inspect("show ck", d.path());
  CHECK(r.rc == 0);
  // (The outline used to print "a/b", which reads as the nested key b of a.)
  CHECK_THAT(r.out, Catch::Contains("a~1b "));
  CHECK_THAT(r.out, Catch::Contains("c~0d "));
  CHECK_THAT(r.out, !Catch::Contains("a/b "));
  // The printed path is the one --leaf takes.
  r = inspect("show ck --leaf a~1b/c~0d", d.path());
  CHECK(r.rc == 0);
}

TEST_CASE("inspect: verify golden and corruption", "[inspect]") {
  REQUIRE(have_inspect());
  temp_dir d;
  save_fixture(d / "ck");
  auto r = inspect("verify ck", d.path());
  CHECK(r.rc == 0);
  CHECK(normalise(r.out) ==
        "ck: OK, 5 leaves, 6 chunks in 1 data file checked; logical 12.1 KiB, data files 20.0 "
        "KiB; T s, R GiB/s\n");
  r = inspect("verify ck --json", d.path());
  CHECK(r.rc == 0);
  CHECK(
      normalise_json(r.out) ==
      R"({"path":"ck","ok":true,"committed":true,"files":1,"leaves":5,"chunks":6,"chunks_checked":6,"logical_bytes":12372,"stored_bytes":20480,"bytes_read":20480,"seconds":"X","problems":[]})");

  SECTION("flipped bytes in two chunks: both named, exit 1") {
    const auto w1 = chunk_offset(d.path(), "params/w", 1);
    const auto noise = chunk_offset(d.path(), "params/noise", 0);
    flip_byte(d / "ck" / "data-00000.bin", w1 + 5);
    flip_byte(d / "ck" / "data-00000.bin", noise + 100);
    r = inspect("verify ck", d.path());
    CHECK(r.rc == 1);
    INFO(r.out);
    CHECK(r.out.rfind("ck: FAILED, 2 problems\n", 0) == 0);
    CHECK(r.out.find("data-00000.bin, leaf \"params/w\", chunk 1 at offset " + std::to_string(w1) +
                     ": checksum mismatch") != std::string::npos);
    CHECK(r.out.find("data-00000.bin, leaf \"params/noise\", chunk 0 at offset " +
                     std::to_string(noise) + ": checksum mismatch") != std::string::npos);
    CHECK(r.out.find("4 of 6 chunks sound") != std::string::npos);
    r = inspect("verify ck --json", d.path());
    CHECK(r.rc == 1);
    auto v = boost::json::parse(r.out);
    CHECK(v.at("ok") == false);
    CHECK(v.at("committed") == true);
    const auto& ps = v.at("problems").as_array();
    REQUIRE(ps.size() == 2);
    // Problems come in file/offset order; where each unit lands depends on which encode
    // finished first, so the two leaves may come in either order.
    const bool w_first = ps[0].at("leaf") == "params/w";
    const auto& pw = ps[w_first ? 0 : 1];
    const auto& pn = ps[w_first ? 1 : 0];
    CHECK(pw.at("leaf") == "params/w");
    CHECK(pw.at("chunk") == 1);
    CHECK(pn.at("leaf") == "params/noise");
    CHECK(pn.at("file") == "data-00000.bin");
  }
  SECTION("truncated index: a clear error") {
    fs::resize_file(d / "ck" / "index.json", fs::file_size(d / "ck" / "index.json") / 2);
    r = inspect("verify ck", d.path());
    CHECK(r.rc == 1);
    CHECK(
        std::regex_search(r.out, std::regex(R"(ck: FAILED, 1 problem \(not a committed checkpoint\)
  index.json: is \d+ bytes, the commit marker says \d+ \(truncated\)
)")));
    r = inspect("show ck", d.path());
    CHECK(r.rc == 1);
    CHECK(r.out.empty());
    CHECK(std::regex_match(
        r.err,
        std::regex(
            R"(ckpt-inspect: ck/index.json: is \d+ bytes, the commit marker says \d+ \(truncated\)
)")));
  }
  SECTION("truncated data file") {
    fs::resize_file(d / "ck" / "data-00000.bin", 4096 + 50);
    r = inspect("verify ck --json", d.path());
    CHECK(r.rc == 1);
    auto v = boost::json::parse(r.out);
    const auto& ps = v.at("problems").as_array();
    REQUIRE(ps.size() >= 2);
    CHECK(ps[0].at("file") == "data-00000.bin");
    CHECK(ps[0].at("leaf") == nullptr);
    CHECK(std::string(ps[0].at("message").as_string()).find("(truncated)") != std::string::npos);
  }
  SECTION("not a checkpoint, missing path, usage") {
    fs::remove(d / "ck" / "COMMIT");
    r = inspect("verify ck", d.path());
    CHECK(r.rc == 1);
    CHECK(r.out == "ck: FAILED, 1 problem (not a committed checkpoint)\n  COMMIT: missing\n");
    r = inspect("verify nowhere", d.path());
    CHECK(r.rc == 2);
    CHECK(r.err == "ckpt-inspect: no checkpoint at nowhere\n");
    r = inspect("verify", d.path());
    CHECK(r.rc == 2);
    CHECK(r.err.rfind("ckpt-inspect: missing arguments", 0) == 0);
    r = inspect("verify ck --frobnicate", d.path());
    CHECK(r.rc == 2);
    r = inspect("frobnicate", d.path());
    CHECK(r.rc == 2);
  }
}

TEST_CASE("inspect: verify_checkpoint reports every bad chunk", "[inspect]") {
  temp_dir d;
  save_fixture(d / "ck");
  auto ok = ckpt::verify_checkpoint_blocking(d / "ck");
  REQUIRE(ok);
  CHECK(ok.value().ok());
  CHECK(ok.value().chunks == 6);
  CHECK(ok.value().chunks_checked == 6);
  // Corrupt every chunk of the file: each one is reported, with its leaf and chunk.
  std::uint64_t progress_calls = 0, last_done = 0, total = 0;
  ckpt::verify_options opt;
  opt.progress = [&](const ckpt::verify_progress& p) {
    ++progress_calls;
    last_done = p.bytes_done;
    total = p.bytes_total;
  };
  {
    std::fstream f(d / "ck" / "data-00000.bin", std::ios::in | std::ios::out | std::ios::binary);
    std::string zeros(20480, '\x01');
    f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  }
  auto bad = ckpt::verify_checkpoint_blocking(d / "ck", opt);
  REQUIRE(bad);
  CHECK_FALSE(bad.value().ok());
  CHECK(bad.value().committed);
  CHECK(bad.value().problems.size() == 6);
  CHECK(bad.value().chunks_checked == 0);
  std::vector<std::string> leaves;
  for (const auto& p : bad.value().problems)
    leaves.push_back(p.leaf + "#" + std::to_string(p.chunk));
  std::sort(leaves.begin(), leaves.end());
  CHECK(leaves == std::vector<std::string>{"layers/0/k#0", "params/b#0", "params/noise#0",
                                           "params/w#0", "params/w#1", "step#0"});
  CHECK(progress_calls >= 2);
  CHECK(last_done == total);
  auto missing = ckpt::verify_checkpoint_blocking(d / "nothing");
  REQUIRE_FALSE(missing);
  CHECK(missing.error() == ckpt::errc::not_found);
}

TEST_CASE("inspect: list golden", "[inspect]") {
  REQUIRE(have_inspect());
  temp_dir d;
  const fs::path job = d / "job";
  save_fixture(job / "step_1", 1);
  save_fixture(job / "step_2", 2);
  REQUIRE(ckpt::store::write_latest(job, "step_2"));
  fs::create_directories(job / ".step_3.tmp-123-0123456789abcdef");
  fs::create_directories(job / "step_4");
  save_fixture(job / "step_10", 10);
  { std::ofstream(job / "step_10" / "COMMIT", std::ios::app) << "garbage"; }
  auto r = inspect("list job", d.path());
  CHECK(r.rc == 0);
  CHECK(normalise(r.out) == R"(job: 2 checkpoints committed, LATEST step_2
   NAME                              STATE       STEP   ON DISK   LOGICAL  CREATED
   step_1                            committed      1  21.4 KiB  12.1 KiB  TIME
*  step_2                            committed      2  21.4 KiB  12.1 KiB  TIME
   .step_3.tmp-123-0123456789abcdef  temporary      -       0 B         -  -
   step_4                            incomplete     -       0 B         -  -
   step_10                           corrupt        -  21.4 KiB         -  -
step_10: COMMIT: root: malformed JSON (JSON document ended early in the middle of an object or array.)
)");
  r = inspect("list job --json", d.path());
  CHECK(r.rc == 0);
  // disk_bytes includes index.json, whose chunk offsets (and so their digits) depend on the
  // order in which write units completed: 219xx.
  CHECK(
      std::regex_replace(normalise_json(r.out), std::regex(R"("disk_bytes":219\d\d)"),
                         R"("disk_bytes":219xx)") ==
      R"J({"job_dir":"job","latest":"step_2","checkpoints":[{"name":"step_1","state":"committed","latest":false,"step":1,"disk_bytes":219xx,"logical_bytes":12372,"stored_bytes":20480,"created_unix_ns":"X","ranks":null,"problem":null},{"name":"step_2","state":"committed","latest":true,"step":2,"disk_bytes":219xx,"logical_bytes":12372,"stored_bytes":20480,"created_unix_ns":"X","ranks":null,"problem":null},{"name":".step_3.tmp-123-0123456789abcdef","state":"temporary","latest":false,"step":null,"disk_bytes":0,"logical_bytes":null,"stored_bytes":null,"created_unix_ns":null,"ranks":null,"problem":null},{"name":"step_4","state":"incomplete","latest":false,"step":null,"disk_bytes":0,"logical_bytes":null,"stored_bytes":null,"created_unix_ns":null,"ranks":null,"problem":null},{"name":"step_10","state":"corrupt","latest":false,"step":null,"disk_bytes":219xx,"logical_bytes":null,"stored_bytes":null,"created_unix_ns":null,"ranks":null,"problem":"COMMIT: root: malformed JSON (JSON document ended early in the middle of an object or array.)"}]})J");
  r = inspect("list nowhere", d.path());
  CHECK(r.rc == 1);
  CHECK(r.err == "ckpt-inspect: no job directory at nowhere\n");
}

TEST_CASE("inspect: diff", "[inspect]") {
  REQUIRE(have_inspect());
  temp_dir d;
  save_fixture(d / "a");
  save_fixture(d / "same");
  save_fixture(d / "b", 8, 0.5f);
  auto r = inspect("diff a same", d.path());
  CHECK(r.rc == 0);
  CHECK(r.out == "a and same: same (5 leaves, metadata and job equal)\n");
  r = inspect("diff a same --json", d.path());
  CHECK(r.rc == 0);
  CHECK(
      r.out ==
      R"({"a":"a","b":"same","same":true,"added":[],"removed":[],"changed":[],"unchanged":5,"tree_same":true,"metadata":[],"job":[]})"
      "\n");
  r = inspect("diff a b", d.path());
  CHECK(r.rc == 1);
  CHECK(r.out == R"(a and b: different
     LEAF      DIFFERENCE
  ~  params/w  data (2 of 2 chunks differ)
     METADATA  A  B
  ~  step      7  8
0 added, 0 removed, 1 changed, 4 unchanged leaves
)");
  r = inspect("diff a b --json", d.path());
  CHECK(r.rc == 1);
  CHECK(
      r.out ==
      R"({"a":"a","b":"b","same":false,"added":[],"removed":[],"changed":[{"path":"params/w","dtype":null,"shape":null,"data":true,"chunks_differing":2}],"unchanged":4,"tree_same":true,"metadata":[{"key":"step","a":7,"b":8}],"job":[]})"
      "\n");
  // A tree with a leaf added, one removed and one retyped.
  auto t = fixture_tree();
  t.get("params")->set("extra", ckpt::array::zeros(ckpt::dtype::u8, {5}).value());
  t.get("params")->set("b", ckpt::array::zeros(ckpt::dtype::f32, {32}).value());
  t.set("step", ckpt::array::zeros(ckpt::dtype::i64, {2}).value());
  REQUIRE(ckpt::save_blocking(d / "c", t, {{"step", 7}, {"note", "fixture"}}, fixture_options()));
  r = inspect("diff a c", d.path());
  CHECK(r.rc == 1);
  CHECK(r.out == R"(a and c: different
     LEAF          DIFFERENCE
  +  params/extra  u8 [5]
  ~  params/b      dtype bf16 -> f32
  ~  step          shape [] -> [2]
1 added, 0 removed, 2 changed, 3 unchanged leaves
)");
  r = inspect("diff a c --json", d.path());
  CHECK(r.rc == 1);
  CHECK(
      r.out ==
      R"({"a":"a","b":"c","same":false,"added":[{"path":"params/extra","dtype":"u8","shape":[5]}],"removed":[],"changed":[{"path":"params/b","dtype":["bf16","f32"],"shape":null,"data":true,"chunks_differing":null},{"path":"step","dtype":null,"shape":[[],[2]],"data":true,"chunks_differing":null}],"unchanged":3,"tree_same":false,"metadata":[],"job":[]})"
      "\n");
  // Same data, different chunking: compared byte for byte, not by checksums.
  auto o = fixture_options();
  o.chunk_bytes = 8192;
  REQUIRE(
      ckpt::save_blocking(d / "rechunked", fixture_tree(), {{"step", 7}, {"note", "fixture"}}, o));
  r = inspect("diff a rechunked", d.path());
  CHECK(r.rc == 0);
  r = inspect("diff a missing", d.path());
  CHECK(r.rc == 2);
}

namespace {

struct npy {
  std::string descr, shape;
  bool fortran = true;
  std::size_t data_offset = 0;
  std::string data;
};

// Parses a .npy file by NumPy's format rules (numpy/lib/format.py, version 1.0), checking
// each of them.
npy read_npy(const fs::path& p) {
  const std::string f = slurp(p);
  REQUIRE(f.size() >= 10);
  CHECK(f.compare(0, 6, "\x93NUMPY") == 0);
  CHECK(f[6] == 1);
  CHECK(f[7] == 0);
  const std::size_t len =
      static_cast<unsigned char>(f[8]) | (static_cast<unsigned char>(f[9]) << 8);
  REQUIRE(f.size() >= 10 + len);
  CHECK((10 + len) % 64 == 0);
  const std::string header = f.substr(10, len);
  CHECK(header.back() == '\n');
  std::smatch m;
  REQUIRE(std::regex_match(
      header, m,
      std::regex(
          R"(\{'descr': '([<|][a-z]\d)', 'fortran_order': (False|True), 'shape': \(([0-9, ]*)\), \} *\n)")));
  npy out;
  out.descr = m[1];
  out.fortran = m[2] == "True";
  out.shape = m[3];
  out.data_offset = 10 + len;
  out.data = f.substr(10 + len);
  return out;
}

}  // namespace

TEST_CASE("inspect: export .npy", "[inspect]") {
  REQUIRE(have_inspect());
  temp_dir d;
  save_fixture(d / "ck");
  auto r = inspect("export ck params/w -o w.npy", d.path());
  CHECK(r.rc == 0);
  CHECK(r.err.empty());
  auto w = read_npy(d / "w.npy");
  CHECK(w.descr == "<f4");
  CHECK_FALSE(w.fortran);
  CHECK(w.shape == "64, 32");
  REQUIRE(w.data.size() == 64 * 32 * 4);
  float x = 0;
  std::memcpy(&x, w.data.data() + 4 * 65, 4);
  CHECK(x == 0.25f);

  r = inspect("export ck params/b -o b.npy", d.path());
  CHECK(r.rc == 0);
  CHECK(r.err.find("note: NumPy has no bf16; wrote its raw bits as <u2") != std::string::npos);
  auto b = read_npy(d / "b.npy");
  CHECK(b.descr == "<u2");
  CHECK(b.shape == "32,");
  CHECK(b.data.size() == 64);

  r = inspect("export ck params/b -o b32.npy --to f32", d.path());
  CHECK(r.rc == 0);
  CHECK(r.err.empty());
  auto b32 = read_npy(d / "b32.npy");
  CHECK(b32.descr == "<f4");
  REQUIRE(b32.data.size() == 128);
  std::memcpy(&x, b32.data.data() + 4, 4);
  CHECK(x == 1.0f);

  r = inspect("export ck step -o s.npy", d.path());
  CHECK(r.rc == 0);
  auto s = read_npy(d / "s.npy");
  CHECK(s.descr == "<i8");
  CHECK(s.shape == "");
  CHECK(s.data.size() == 8);

  r = inspect("export ck layers/0/k -o k.npy", d.path());
  CHECK(r.rc == 0);
  CHECK(read_npy(d / "k.npy").descr == "<i4");

  r = inspect("export ck params -o p.npy", d.path());
  CHECK(r.rc == 1);
  CHECK(r.err == "ckpt-inspect: \"params\" in ck is a dict, not a leaf\n");
  r = inspect("export ck params/w", d.path());
  CHECK(r.rc == 2);
  r = inspect("export ck params/w -o w.npy --to f16", d.path());
  CHECK(r.rc == 2);

  // NumPy itself, when this machine has it.
  for (const char* py : {"python3", "/usr/bin/python3"}) {
    const std::string probe = std::string(py) + " -c 'import numpy' >/dev/null 2>&1";
    if (std::system(probe.c_str()) != 0) continue;
    const std::string cmd = "cd " + quote(d.path().string()) + " && " + py +
                            " -c 'import numpy; a=numpy.load(\"w.npy\"); b=numpy.load(\"b.npy\"); "
                            "s=numpy.load(\"s.npy\"); print(a.dtype, a.shape, a[1,1], b.dtype, "
                            "b.shape, s.dtype, s.shape, s)'";
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p);
    char buf[512] = {};
    std::size_t n = std::fread(buf, 1, sizeof buf - 1, p);
    ::pclose(p);
    CHECK(std::string(buf, n) == "float32 (64, 32) 8.25 uint16 (32,) int64 () 7\n");
    break;
  }
}

TEST_CASE("inspect: show a differential checkpoint's own and shared bytes", "[inspect]") {
  REQUIRE(have_inspect());
  temp_dir d;
  REQUIRE(
      ckpt::save_blocking(d / "job" / "A", diff_model(1), {{"step", 1}}, diff_save_options({})));
  // An ordinary checkpoint whose files nobody links: no sharing lines or keys.
  auto r = inspect("show job/A", d.path());
  CHECK(r.rc == 0);
  CHECK_THAT(r.out, !Catch::Contains("holds") && !Catch::Contains("shares"));
  r = inspect("show job/A --json", d.path());
  CHECK(r.rc == 0);
  CHECK_FALSE(boost::json::parse(r.out).as_object().contains("shared"));
  r = inspect("list job", d.path());
  CHECK(r.rc == 0);
  CHECK_THAT(r.out, !Catch::Contains("job total on disk"));

  auto b = ckpt::save_blocking(d / "job" / "B", diff_model(2), {{"step", 2}},
                               diff_save_options(d / "job" / "A"));
  REQUIRE(b);
  REQUIRE(b.value().shared_bytes > 4u << 20);

  r = inspect("show job/B --json", d.path());
  CHECK(r.rc == 0);
  auto v = boost::json::parse(r.out).as_object();
  const auto stored = json_u64(v.at("stored_bytes"));
  const auto own = json_u64(v.at("own_bytes"));
  const auto& shared = v.at("shared").as_array();
  REQUIRE(shared.size() == 1);
  CHECK(shared[0].at("origin") == "A");
  const auto shared_bytes = json_u64(shared[0].at("bytes"));
  const auto shared_files = json_u64(shared[0].at("files"));
  CHECK(shared_files >= 1);
  CHECK(json_u64(shared[0].at("linked_elsewhere")) == shared_files);  // A still links them
  CHECK(json_u64(shared[0].at("missing")) == 0);
  CHECK(own > 0);
  CHECK(own + shared_bytes == stored);
  CHECK(shared_bytes > own);
  CHECK(json_u64(v.at("own_linked_elsewhere")) == 0);
  std::uint64_t with_origin = 0;
  for (const auto& f : v.at("files").as_array()) {
    if (!f.as_object().contains("origin")) continue;
    ++with_origin;
    CHECK(f.at("origin") == "A");
    CHECK(std::string(f.at("name").as_string()).rfind("shared-", 0) == 0);
  }
  CHECK(with_origin == shared_files);
  CHECK(json_u64(v.at("own_files")) + shared_files == v.at("files").as_array().size());

  r = inspect("show job/B", d.path());
  CHECK(r.rc == 0);
  INFO(r.out);
  CHECK(std::regex_search(
      r.out,
      std::regex(
          R"(ratio \d\.\d\d\n  holds \d+(\.\d)? (B|KiB|MiB) itself \(\d+ data files?\)\n  shares \d+\.\d MiB with A \()" +
          std::to_string(shared_files) + " data files?, still shared\\)\n\nmetadata")));
  // A's own files are linked by B now.
  r = inspect("show job/A", d.path());
  CHECK(r.rc == 0);
  CHECK(std::regex_search(
      r.out, std::regex(R"(\n  holds \d+\.\d MiB itself \(\d+ data files?, )" +
                        std::to_string(shared_files) + " also linked elsewhere\\)\n")));
  CHECK_THAT(r.out, !Catch::Contains("shares"));

  // list: per-checkpoint sizes as before, and the job's total with each inode once.
  r = inspect("list job", d.path());
  CHECK(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("\njob total on disk: ") &&
                        Catch::Contains(" (hard-linked files counted once)\n"));
  r = inspect("list job --json", d.path());
  CHECK(r.rc == 0);
  auto l = boost::json::parse(r.out).as_object();
  std::uint64_t sum = 0;
  for (const auto& c : l.at("checkpoints").as_array())
    sum += json_u64(c.at("disk_bytes"));
  CHECK(json_u64(l.at("disk_bytes_once")) == sum - shared_bytes);

  // The base deleted: B holds the only links to those files now.
  fs::remove_all(d / "job" / "A");
  r = inspect("show job/B", d.path());
  CHECK(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains(" with A (" + std::to_string(shared_files) + " data file") &&
                        Catch::Contains(", only here now)\n"));
  r = inspect("list job", d.path());
  CHECK_THAT(r.out, !Catch::Contains("job total on disk"));
}

TEST_CASE("inspect: consolidate writes a self-contained copy", "[inspect]") {
  REQUIRE(have_inspect());
  temp_dir d;
  save_differential(d / "job");
  auto r = inspect("consolidate job/B C", d.path());
  CHECK(r.rc == 0);
  CHECK(r.err.empty());
  INFO(r.out);
  CHECK(std::regex_match(
      r.out,
      std::regex(
          R"(job/B -> C: 4 leaves, logical \d+\.\d MiB, \d+ data files? written \(\d+\.\d MiB\), links nothing \(job/B shared \d+\.\d MiB with A\)
)")));
  fs::remove_all(d / "job" / "A");

  auto c = ckpt::load_blocking(d / "C");
  REQUIRE(c);
  CHECK(c.value().tree == diff_model(2));
  CHECK(c.value().metadata == boost::json::object{{"step", 2}});
  REQUIRE(c.value().job);
  CHECK(*c.value().job == *diff_save_options({}).job);
  CHECK(ckpt::verify_checkpoint_blocking(d / "C").value().ok());

  r = inspect("show C --json", d.path());
  CHECK(r.rc == 0);
  auto v = boost::json::parse(r.out).as_object();
  CHECK_FALSE(v.contains("shared"));
  CHECK_FALSE(v.contains("own_bytes"));
  const auto& files = v.at("files").as_array();
  CHECK_FALSE(files.empty());
  for (const auto& f : files) {
    CHECK_FALSE(f.as_object().contains("origin"));
    struct stat st {};
    REQUIRE(::stat((d / "C" / std::string(f.at("name").as_string())).c_str(), &st) == 0);
    CHECK(st.st_nlink == 1);
  }
  // SRC's chunking is kept (1 MiB chunks, not the 4 MiB default), so C can be a later base.
  auto vb = boost::json::parse(inspect("show job/B --json", d.path()).out).as_object();
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(v.at("leaves").at(i).at("path") == vb.at("leaves").at(i).at("path"));
    CHECK(v.at("leaves").at(i).at("num_chunks") == vb.at("leaves").at(i).at("num_chunks"));
  }
  CHECK(v.at("leaves").at(0).at("num_chunks") == 4);
  auto next = ckpt::save_blocking(d / "D", diff_model(3), {}, diff_save_options(d / "C"));
  REQUIRE(next);
  CHECK(next.value().shared_bytes > 4u << 20);

  // An ordinary checkpoint consolidates too.
  r = inspect("consolidate C E", d.path());
  CHECK(r.rc == 0);
  CHECK_THAT(r.out, Catch::EndsWith("links nothing (C shared nothing)\n"));
}

TEST_CASE("inspect: consolidate refuses what it cannot do", "[inspect]") {
  REQUIRE(have_inspect());
  temp_dir d;
  save_differential(d / "job");
  auto r = inspect("consolidate job/B job/A", d.path());
  CHECK(r.rc == 1);
  CHECK(r.out.empty());
  CHECK_THAT(r.err, Catch::StartsWith("ckpt-inspect: job/A already exists"));
  fs::create_directories(d / "empty");
  r = inspect("consolidate job/B empty", d.path());
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::StartsWith("ckpt-inspect: empty already exists"));
  r = inspect("consolidate nowhere C", d.path());
  CHECK(r.rc == 1);
  CHECK(r.err == "ckpt-inspect: no checkpoint at nowhere\n");
  CHECK_FALSE(fs::exists(d / "C"));
  r = inspect("consolidate job C", d.path());  // not a checkpoint
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::StartsWith("ckpt-inspect: job") && Catch::Contains("COMMIT"));
  r = inspect("consolidate job/B job/B/inner", d.path());
  CHECK(r.rc == 1);
  CHECK(r.err == "ckpt-inspect: job/B/inner lies inside job/B\n");
  CHECK_FALSE(fs::exists(d / "job" / "B" / "inner"));
  r = inspect("consolidate job/B", d.path());
  CHECK(r.rc == 2);
  r = inspect("consolidate job/B C --json", d.path());
  CHECK(r.rc == 2);

  std::vector<ckpt::sharded_leaf> leaves;
  leaves.push_back(
      ckpt::sharded_leaf::replicated_leaf("w", ckpt::test::random_array(ckpt::dtype::f32, 100, 5)));
  REQUIRE(ckpt::save_sharded_blocking(ckpt::make_local_coordinator(), d / "sharded",
                                      std::move(leaves), {}));
  r = inspect("consolidate sharded C", d.path());
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::StartsWith("ckpt-inspect: sharded is a sharded checkpoint;"));
  CHECK_FALSE(fs::exists(d / "C"));
}
