// Differential checkpoints (issue 18): a save with a base shares the chunks whose raw bytes the
// base already holds, through hard links to the base's data files; deleting or retiring the base
// never breaks it, a damaged base chunk is found through it, and the job layer uses LATEST as the
// base by default. On tmpfs and on the real disk (O_DIRECT).
#include "index_support.hpp"
#include "support.hpp"

#include "format/index.hpp"
#include "io/backend.hpp"

#include <ckpt/job.hpp>
#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/store.hpp>
#include <ckpt/verify.hpp>

#include <boost/describe/class.hpp>
#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

namespace fs = std::filesystem;
namespace json = boost::json;
using ckpt::array;
using ckpt::dtype;
using ckpt::tree;

namespace {

constexpr std::int64_t frozen_elems = 3 * 1024 * 1024 / 4 + 300;  // 3 chunks of 1 MiB + a tail

// A model whose "frozen" leaves never change and whose "head" changes every step.
tree model(std::uint64_t step) {
  return tree::dict({{"frozen", ckpt::test::random_array(dtype::f32, frozen_elems, 1)},
                     {"embed", ckpt::test::random_array(dtype::bf16, 70000, 2)},
                     {"small", ckpt::test::random_array(dtype::i32, 10, 3)},
                     {"head", ckpt::test::random_array(dtype::f32, 50000, 100 + step)}});
}

std::uint64_t frozen_bytes() {
  return static_cast<std::uint64_t>(frozen_elems) * 4 + 70000 * 2 + 10 * 4;
}

using ckpt::test::read_index;

// Bytes the files under `dir` take on disk, each inode counted once (hard links share one).
std::uint64_t disk_usage(const fs::path& dir) {
  std::set<std::pair<dev_t, ino_t>> seen;
  std::uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (seen.insert({st.st_dev, st.st_ino}).second)
      total += static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

ckpt::save_options diff_options(const fs::path& base) {
  ckpt::save_options o;
  o.chunk_bytes = 1 << 20;
  o.base = base;
  return o;
}

}  // namespace

TEST_CASE("a differential save shares unchanged chunks through hard links", "[diff]") {
  for (const auto& root : ckpt::test::test_roots()) {
    for (const bool waiting : {true, false}) {
      INFO(root << (waiting ? " save" : " start_save"));
      ckpt::test::temp_dir dir(root);
      ckpt::save_options full;
      full.chunk_bytes = 1 << 20;
      REQUIRE(ckpt::save_blocking(dir / "a", model(1), {{"step", 1}}, full));
      const tree t2 = model(2);
      ckpt::save_stats st;
      if (waiting) {
        st = ckpt::save_blocking(dir / "b", t2, {{"step", 2}}, diff_options(dir / "a")).value();
      } else {
        auto h = ckpt::start_save(dir / "b", t2, {{"step", 2}}, diff_options(dir / "a"));
        REQUIRE(h.wait_committed());
        st = h.stats();
      }
      CHECK(st.shared_bytes == frozen_bytes());
      CHECK(st.shared_chunks == 3 + 1 + 1 + 1);
      CHECK(st.base_note.empty());
      // Only "head" was written (padded to pages).
      std::uint64_t own = 0;
      const auto ix = read_index(dir / "b");
      for (const auto& f : ix.files) {
        if (f.origin.empty()) {
          own += f.size;
        } else {
          CHECK(f.origin == "a");
          CHECK(f.name.rfind("shared-", 0) == 0);
        }
      }
      CHECK(own <= 50000 * 4 + 4096);
      for (const auto& le : ix.leaves) {
        for (const auto& c : le.chunks)
          CHECK(c.hashed);
      }
      // Bit-exact, also once the base is gone (the links hold its data).
      auto loaded = ckpt::load_blocking(dir / "b").value();
      CHECK(loaded.tree == t2);
      fs::remove_all(dir / "a");
      loaded = ckpt::load_blocking(dir / "b").value();
      CHECK(loaded.tree == t2);
      CHECK(ckpt::verify_checkpoint_blocking(dir / "b").value().ok());
    }
  }
}

TEST_CASE("a chain of differential saves links the file that holds the bytes, never a chain",
          "[diff]") {
  ckpt::test::temp_dir dir;
  ckpt::save_options o;
  o.chunk_bytes = 1 << 20;
  REQUIRE(ckpt::save_blocking(dir / "s1", model(1), {{"step", 1}}, o));
  REQUIRE(ckpt::save_blocking(dir / "s2", model(2), {{"step", 2}}, diff_options(dir / "s1")));
  auto st = ckpt::save_blocking(dir / "s3", model(3), {{"step", 3}}, diff_options(dir / "s2"));
  REQUIRE(st);
  CHECK(st.value().shared_bytes == frozen_bytes());
  const auto ix = read_index(dir / "s3");
  for (const auto& f : ix.files) {
    // s2 wrote only "head", which changed again: s3 links s1's files alone.
    if (!f.origin.empty()) CHECK(f.origin == "s1");
  }
  fs::remove_all(dir / "s1");
  fs::remove_all(dir / "s2");
  CHECK(ckpt::load_blocking(dir / "s3").value().tree == model(3));
}

TEST_CASE("a damaged base chunk is found through the checkpoint that shares it", "[diff]") {
  ckpt::test::temp_dir dir;
  ckpt::save_options o;
  o.chunk_bytes = 1 << 20;
  o.compress = false;
  REQUIRE(ckpt::save_blocking(dir / "a", model(1), {{"step", 1}}, o));
  REQUIRE(ckpt::save_blocking(dir / "b", model(2), {{"step", 2}}, diff_options(dir / "a")));
  // Flip a byte of "frozen" chunk 1 in a's data file.
  const auto ia = read_index(dir / "a");
  const ckpt::format::leaf_entry* frozen = nullptr;
  for (const auto& le : ia.leaves)
    if (le.path == "frozen") frozen = &le;
  REQUIRE(frozen);
  const auto& c = frozen->chunks[1];
  {
    std::fstream f(dir / "a" / ia.files[c.file].name,
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(c.offset + 100));
    char ch = 0;
    f.read(&ch, 1);
    ch = static_cast<char>(ch ^ 0x10);
    f.seekp(static_cast<std::streamoff>(c.offset + 100));
    f.write(&ch, 1);
  }
  auto rep = ckpt::verify_checkpoint_blocking(dir / "b").value();
  REQUIRE(rep.problems.size() == 1);
  CHECK(rep.problems[0].leaf == "frozen");
  CHECK(rep.problems[0].chunk == 1);
  CHECK_THAT(rep.problems[0].file, Catch::Contains("(written by a)"));
  auto loaded = ckpt::load_blocking(dir / "b");
  REQUIRE_FALSE(loaded);
  CHECK_THAT(loaded.error().message(), Catch::Contains("frozen"));
  CHECK_THAT(loaded.error().message(), Catch::Contains("written by a"));
}

TEST_CASE("an unusable base fails clearly, or saves in full with base_optional", "[diff]") {
  ckpt::test::temp_dir dir;
  auto missing = ckpt::save_blocking(dir / "b", model(1), {}, diff_options(dir / "nope"));
  REQUIRE_FALSE(missing);
  CHECK(missing.error() == ckpt::errc::invalid_argument);
  CHECK_THAT(missing.error().message(), Catch::Contains("base " + (dir / "nope").string()));
  CHECK_FALSE(fs::exists(dir / "b"));
  auto o = diff_options(dir / "nope");
  o.base_optional = true;
  auto st = ckpt::save_blocking(dir / "b", model(1), {}, o);
  REQUIRE(st);
  CHECK(st.value().shared_bytes == 0);
  CHECK_THAT(st.value().base_note, Catch::Contains("saved in full"));
  // Another chunk size: nothing lines up, everything is written, and it still loads.
  auto other = diff_options(dir / "b");
  other.chunk_bytes = 1 << 19;
  st = ckpt::save_blocking(dir / "c", model(1), {}, other);
  REQUIRE(st);
  CHECK(st.value().shared_bytes < frozen_bytes());
  CHECK(ckpt::load_blocking(dir / "c").value().tree == model(1));
  // Hashes are what a base is compared by.
  auto nohash = diff_options(dir / "b");
  nohash.hash_chunks = false;
  CHECK_FALSE(ckpt::save_blocking(dir / "d", model(1), {}, nohash));
}

namespace {

// A file system that refuses hard links (as some FUSE and object-store mounts do).
class no_links_backend final : public ckpt::io::backend {
 public:
  explicit no_links_backend(std::unique_ptr<ckpt::io::backend> inner) : inner_(std::move(inner)) {}
  std::string_view name() const noexcept override { return "no-links"; }
  void submit(ckpt::io::op* o) noexcept override {
    if (o->req.kind == ckpt::io::op_kind::link) {
      o->complete(-EPERM);
      return;
    }
    inner_->submit(o);
  }
  void shutdown() noexcept override { inner_->shutdown(); }

 private:
  std::unique_ptr<ckpt::io::backend> inner_;
};

}  // namespace

TEST_CASE("a file system without hard links: a clear error, or a full save", "[diff]") {
  ckpt::test::temp_dir dir;
  ckpt::save_options o;
  o.chunk_bytes = 1 << 20;
  REQUIRE(ckpt::save_blocking(dir / "a", model(1), {{"step", 1}}, o));
  auto engine = ckpt::io::make_engine(
                    std::make_unique<no_links_backend>(ckpt::io::make_thread_backend({}).value()))
                    .value();
  auto rt = ckpt::runtime::create(engine, {}).value();
  auto d = diff_options(dir / "a");
  d.runtime = rt;
  auto refused = ckpt::save_blocking(dir / "b", model(2), {{"step", 2}}, d);
  REQUIRE_FALSE(refused);
  CHECK_THAT(refused.error().message(), Catch::Contains("refuses hard links"));
  d.base_optional = true;
  auto full = ckpt::save_blocking(dir / "b", model(2), {{"step", 2}}, d);
  REQUIRE(full);
  CHECK(full.value().shared_bytes == 0);
  CHECK_THAT(full.value().base_note, Catch::Contains("refuses hard links"));
  d.runtime.reset();
  CHECK(ckpt::load_blocking(dir / "b").value().tree == model(2));
  // Nothing left behind by the probe: only the two checkpoints.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path()))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"a", "b"});
  for (int i = 0; i < 5000 && rt.use_count() > 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

TEST_CASE("overwriting the base itself keeps the shared bytes", "[diff]") {
  ckpt::test::temp_dir dir;
  ckpt::save_options o;
  o.chunk_bytes = 1 << 20;
  REQUIRE(ckpt::save_blocking(dir / "a", model(1), {{"step", 1}}, o));
  auto over = diff_options(dir / "a");
  over.overwrite = true;
  auto st = ckpt::save_blocking(dir / "a", model(2), {{"step", 2}}, over);
  REQUIRE(st);
  CHECK(st.value().shared_bytes == frozen_bytes());
  CHECK(ckpt::load_blocking(dir / "a").value().tree == model(2));
}

TEST_CASE("50 differential saves keeping the last 3: bounded disk, every one loads", "[diff]") {
  ckpt::test::temp_dir dir(fs::current_path());  // the real disk: st_blocks are real there
  const fs::path job = dir / "job";
  const std::uint64_t logical = frozen_bytes() + 50000 * 4;
  std::uint64_t peak = 0;
  for (std::uint64_t s = 1; s <= 50; ++s) {
    const std::string name = "step_" + std::to_string(s);
    auto o = diff_options(job / ("step_" + std::to_string(s - 1)));
    o.base_optional = true;  // (step_0 does not exist)
    auto st = ckpt::save_blocking(job / name, model(s), {{"step", s}}, o);
    REQUIRE(st);
    if (s > 1) CHECK(st.value().shared_bytes == frozen_bytes());
    REQUIRE(ckpt::store::write_latest(job, name));
    REQUIRE(ckpt::store::apply_retention(job, {.keep_last = 3}));
    peak = std::max(peak, disk_usage(job));
  }
  const auto listed = ckpt::store::list_committed(job).value();
  CHECK(listed == std::vector<std::string>{"step_48", "step_49", "step_50"});
  for (const auto& name : listed) {
    const auto step = std::stoull(name.substr(5));
    CHECK(ckpt::load_blocking(job / name).value().tree == model(step));
  }
  // The job directory moved as a whole still loads (the links are inside it).
  fs::rename(job, dir / "moved");
  for (const auto& name : listed) {
    const auto step = std::stoull(name.substr(5));
    CHECK(ckpt::load_blocking(dir / "moved" / name).value().tree == model(step));
  }
  // One copy of the frozen bytes and three of the head, plus small files and page padding.
  const std::uint64_t bound = frozen_bytes() + 3 * 50000 * 4 + 3 * (64 << 10) + (256 << 10);
  std::printf(
      "differential retention: 50 saves keep 3, logical %llu bytes each, disk at most "
      "%llu bytes (%.2fx one checkpoint; 3 full ones: 3.00x)\n",
      static_cast<unsigned long long>(logical), static_cast<unsigned long long>(peak),
      static_cast<double>(peak) / static_cast<double>(logical));
  CHECK(peak <= bound);
}

namespace {

struct diff_config {
  int layers = 2;
};
BOOST_DESCRIBE_STRUCT(diff_config, (), (layers))

class diff_job : public ckpt::restoreable_job<diff_config> {
 public:
  using restoreable_job::restoreable_job;
  boost::asio::awaitable<ckpt::result<void>> run() override { co_return ckpt::success(); }
  boost::asio::awaitable<ckpt::result<void>> restore_from_path(fs::path) override {
    co_return ckpt::success();
  }
};

}  // namespace

TEST_CASE("the job layer's saves are differential against LATEST by default", "[diff][job]") {
  ckpt::test::temp_dir dir;
  ckpt::execution_spec spec;
  spec.project = "p";
  spec.group = "g";
  spec.job_name = "j";
  spec.run_id = "r";
  spec.cluster.checkpoints_dir = dir.path();
  diff_job job(spec, {});
  job.save_defaults().chunk_bytes = 1 << 20;
  job.set_retention({.keep_last = 1});
  auto first = job.save_and_register_blocking("step_1", model(1), {{"step", 1}});
  REQUIRE(first);
  CHECK(first.value().shared_bytes == 0);
  CHECK(first.value().base_note.empty());  // (no LATEST: no base, nothing to note)
  auto second = job.save_and_register_blocking("step_2", model(2), {{"step", 2}});
  REQUIRE(second);
  CHECK(second.value().shared_bytes == frozen_bytes());
  REQUIRE(job.wait_retention());
  CHECK(diff_job::checkpoints_blocking(spec).value() == std::vector<std::string>{"step_2"});
  const tree tmpl = model(0);  // (filled in place)
  auto loaded = job.get_tree_and_metadata_blocking("step_2", tmpl);
  REQUIRE(loaded);
  CHECK(loaded.value().tree == model(2));
  job.set_differential(false);
  auto third = job.save_and_register_blocking("step_3", model(3), {{"step", 3}});
  REQUIRE(third);
  CHECK(third.value().shared_bytes == 0);
}

TEST_CASE("index 1.1: hashes and origins round trip, malformed ones are refused",
          "[diff][format]") {
  namespace fmt = ckpt::format;
  fmt::index ix;
  ix.files.push_back({"data-00000.bin", 8192, {}});
  ix.files.push_back({fmt::shared_file_name(0xabcdef, 1), 4096, "step_1"});
  fmt::leaf_entry le;
  le.path = "w";
  le.dtype = dtype::u8;
  le.shape = {200};
  le.num_bytes = 200;
  le.chunks.push_back({0, 100, 100, 0x1234, 0, fmt::codec::raw, true, {1, 2}, {}});
  le.chunks.push_back({0, 100, 100, 0x5678, 1, fmt::codec::raw, true, {3, 4}, {}});
  ix.leaves.push_back(le);
  fmt::set_structure(ix, tree::dict({{"w", array::spec(dtype::u8, {200}).value()}}));
  std::string text = fmt::encode_index(ix);
  CHECK_THAT(text, Catch::Contains("\"version\":[1,2]"));
  CHECK_THAT(text, Catch::Contains("\"origin\":\"step_1\""));
  auto parse = [](std::string s) {
    s.append(fmt::parse_padding, '\0');
    return fmt::parse_index(std::string_view(s.data(), s.size() - fmt::parse_padding));
  };
  auto back = parse(text).value();
  REQUIRE(back.leaves.size() == 1);
  CHECK(back.files[1].origin == "step_1");
  CHECK(back.leaves[0].chunks[1].hashed);
  CHECK(back.leaves[0].chunks[1].hash == fmt::raw_hash{3, 4});
  auto replace = [&](std::string from, std::string to) {
    std::string s = text;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  auto one_hash = parse(replace(",\"" + fmt::hash128_hex({3, 4}) + "\"", ""));
  REQUIRE_FALSE(one_hash);
  CHECK_THAT(one_hash.error().message(), Catch::Contains("1 hashes for 2 chunks"));
  auto three = parse(replace(fmt::hash128_hex({3, 4}) + "\"",
                             fmt::hash128_hex({3, 4}) + "\",\"" + fmt::hash128_hex({5, 6}) + "\""));
  REQUIRE_FALSE(three);
  CHECK_THAT(three.error().message(), Catch::Contains("more hashes than its 2 chunks"));
  auto short_hash = parse(replace(fmt::hash128_hex({3, 4}), "abc"));
  REQUIRE_FALSE(short_hash);
  CHECK_THAT(short_hash.error().message(), Catch::Contains("is not 32 hex digits"));
  auto escaping = parse(replace("\"step_1\"", "\"../x\""));
  REQUIRE_FALSE(escaping);
  CHECK_THAT(escaping.error().message(), Catch::Contains("origin"));
}
