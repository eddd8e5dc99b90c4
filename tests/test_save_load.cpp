// Round trips through the save and load pipelines, templates, overwrite rules, the overlap
// contract and corrupt checkpoints. Runs on tmpfs and on the real disk.
#include "format/index.hpp"
#include "index_support.hpp"
#include "pipeline/save_units.hpp"
#include "support.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

namespace fs = std::filesystem;
using ckpt::array;
using ckpt::dtype;
using ckpt::tree;

namespace {

// Owned leaves of deterministic random bytes.
array random_leaf(dtype t, ckpt::shape s, std::uint64_t seed) {
  auto a = array::zeros(t, s).value();
  auto bytes = ckpt::test::random_bytes(a.num_bytes(), seed);
  if (!bytes.empty()) std::memcpy(a.mutable_bytes().data(), bytes.data(), bytes.size());
  if (t == dtype::bool_) {
    for (auto& b : a.mutable_bytes())
      b = static_cast<std::byte>(static_cast<unsigned>(b) & 1u);
  }
  return a;
}

tree sample_tree() {
  tree t = tree::dict();
  std::uint64_t seed = 1;
  tree by_dtype = tree::dict();
  for (auto d : ckpt::all_dtypes)
    by_dtype.set(std::string(ckpt::dtype_name(d)), random_leaf(d, {3, 5}, seed++));
  t.set("dtypes", std::move(by_dtype));
  t.set("scalar", random_leaf(dtype::i64, {}, seed++));
  t.set("empty", random_leaf(dtype::f32, {0, 4}, seed++));
  t.set("none", tree());
  t.set("list", tree::list({random_leaf(dtype::f32, {7}, seed++), tree(),
                            tree::dict({{"a/b~c", random_leaf(dtype::u8, {9}, seed++)}})}));
  t.set("big", random_leaf(dtype::f32, {300, 1000}, seed++));  // several chunks at 256 KiB
  std::vector<float> zeros(100000, 0.0f);
  auto z = array::zeros(dtype::f32, {100000}).value();
  t.set("zeros", z);
  return t;
}

ckpt::save_options small_chunks() {
  ckpt::save_options o;
  o.chunk_bytes = 256 << 10;
  return o;
}

using ckpt::test::read_index;

void flip_byte(const fs::path& p, std::uint64_t offset) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x40);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

}  // namespace

TEST_CASE("save then load round-trips every dtype and shape", "[save][load]") {
  auto root = GENERATE(from_range(ckpt::test::test_roots()));
  ckpt::test::temp_dir dir(root);
  tree t = sample_tree();
  boost::json::object meta{{"step", 42}, {"note", "hello"}};
  auto stats = ckpt::save_blocking(dir / "ckpt", t, meta, small_chunks());
  REQUIRE(stats);
  CHECK(stats.value().logical_bytes == t.num_bytes());
  CHECK(stats.value().leaves == t.num_leaves());
  CHECK(fs::exists(dir / "ckpt" / "COMMIT"));

  auto loaded = ckpt::load_blocking(dir / "ckpt");
  REQUIRE(loaded);
  CHECK(loaded.value().tree == t);
  CHECK(loaded.value().metadata == meta);
  CHECK_FALSE(loaded.value().job);
  CHECK(ckpt::is_committed(dir / "ckpt").value());

  // Only the checkpoint is left in the parent: no temporary directories.
  std::size_t entries = 0;
  for (auto& e : fs::directory_iterator(dir.path())) {
    (void)e;
    ++entries;
  }
  CHECK(entries == 1);
}

TEST_CASE("codec decisions are recorded per chunk", "[save][codec]") {
  ckpt::test::temp_dir dir;
  tree t = sample_tree();
  REQUIRE(ckpt::save_blocking(dir / "c", t, {}, small_chunks()));
  auto ix = read_index(dir / "c");
  for (const auto& le : ix.leaves) {
    if (le.path == "zeros") {
      for (const auto& c : le.chunks) {
        // Whole zero pages are fill runs (nothing stored for them), anything else compressed.
        CHECK((c.codec != ckpt::format::codec::raw || (!c.runs.empty() && c.stored_size == 0)));
      }
    }
    if (le.path == "big") {
      REQUIRE(le.chunks.size() >= 4);
      for (const auto& c : le.chunks)
        CHECK(c.codec == ckpt::format::codec::raw);
    }
  }
  ckpt::save_options raw = small_chunks();
  raw.compress = false;
  REQUIRE(ckpt::save_blocking(dir / "raw", t, {}, raw));
  for (const auto& le : read_index(dir / "raw").leaves) {
    for (const auto& c : le.chunks) {
      CHECK(c.codec == ckpt::format::codec::raw);
      CHECK(c.runs.empty());  // (no fill runs either: compress=false stores every byte)
    }
  }
  CHECK(ckpt::load_blocking(dir / "raw").value().tree == t);
}

TEST_CASE("strict and partial template restores", "[load][template]") {
  ckpt::test::temp_dir dir;
  auto w = random_leaf(dtype::f32, {64, 32}, 7);
  auto b = random_leaf(dtype::f32, {32}, 8);
  auto mu = random_leaf(dtype::f32, {64, 32}, 9);
  tree trainer = tree::dict({{"params", tree::dict({{"w", w}, {"b", b}})},
                             {"opt_state", tree::dict({{"mu", mu}})},
                             {"step", random_leaf(dtype::i64, {}, 10)}});
  REQUIRE(ckpt::save_blocking(dir / "t", trainer, {{"step", 3}}));

  // A params-only inference template: destination memory for w, a spec for b.
  std::vector<float> w_dest(64 * 32, -1.0f);
  tree tmpl = tree::dict(
      {{"params", tree::dict({{"w", array::borrow(std::span<float>(w_dest), {64, 32}).value()},
                              {"b", array::spec(dtype::f32, {32}).value()}})}});
  ckpt::load_options partial;
  partial.partial = true;
  auto got = ckpt::load_blocking(dir / "t", &tmpl, partial);
  REQUIRE(got);
  const tree& r = got.value().tree;
  CHECK(r.find("params/w")->leaf() == w);
  CHECK(r.find("params/b")->leaf() == b);
  CHECK(r.find("opt_state") == nullptr);
  // Zero copy: w was decoded straight into the caller's memory.
  CHECK(r.find("params/w")->leaf().bytes().data() == reinterpret_cast<std::byte*>(w_dest.data()));
  CHECK(std::memcmp(w_dest.data(), w.bytes().data(), w.num_bytes()) == 0);

  // Strict: every mismatch listed at once; the caller's memory untouched.
  std::vector<float> w2(64 * 32, -1.0f);
  tree bad = tree::dict(
      {{"params", tree::dict({{"w", array::borrow(std::span<float>(w2), {64, 32}).value()},
                              {"b", array::spec(dtype::f64, {32}).value()},
                              {"extra", array::spec(dtype::f32, {1}).value()}})}});
  auto strict = ckpt::load_blocking(dir / "t", &bad);
  REQUIRE_FALSE(strict);
  CHECK(strict.error() == ckpt::errc::template_mismatch);
  const std::string& msg = strict.error().message();
  CHECK(msg.find("\"params/b\": template f64[32], checkpoint f32[32]") != std::string::npos);
  CHECK(msg.find("missing in checkpoint: \"params/extra\"") != std::string::npos);
  CHECK(msg.find("not in template: \"opt_state/mu\"") != std::string::npos);
  CHECK(msg.find("not in template: \"step\"") != std::string::npos);
  CHECK(w2[0] == -1.0f);
  CHECK(w2.back() == -1.0f);

  // Partial with a wrong shape skips that leaf silently.
  tree skew = tree::dict({{"params", tree::dict({{"w", array::spec(dtype::f32, {32, 64}).value()},
                                                 {"b", array::spec(dtype::f32, {32}).value()}})}});
  auto sk = ckpt::load_blocking(dir / "t", &skew, partial);
  REQUIRE(sk);
  CHECK(sk.value().tree.find("params/w") == nullptr);
  CHECK(sk.value().tree.find("params/b")->leaf() == b);
}

TEST_CASE("single subtree and metadata-only loads", "[load]") {
  ckpt::test::temp_dir dir;
  tree t = sample_tree();
  REQUIRE(ckpt::save_blocking(dir / "c", t, {{"step", 7}}, small_chunks()));
  auto leaf = ckpt::load_subtree_blocking(dir / "c", "list/2/a~1b~0c");
  REQUIRE(leaf);
  CHECK(leaf.value().leaf() == t.find("list/2/a~1b~0c")->leaf());
  auto sub = ckpt::load_subtree_blocking(dir / "c", "dtypes");
  REQUIRE(sub);
  CHECK(sub.value() == *t.find("dtypes"));
  auto missing = ckpt::load_subtree_blocking(dir / "c", "nope");
  REQUIRE_FALSE(missing);
  CHECK(missing.error() == ckpt::errc::not_found);

  // Metadata-only opens no data file: it still works with every data file gone.
  for (auto& e : fs::directory_iterator(dir / "c")) {
    if (e.path().filename().string().rfind("data-", 0) == 0) fs::remove(e.path());
  }
  auto meta = ckpt::load_metadata_blocking(dir / "c");
  REQUIRE(meta);
  CHECK(meta.value().at("step").as_int64() == 7);
  auto full = ckpt::load_blocking(dir / "c");
  REQUIRE_FALSE(full);
  CHECK(full.error() == ckpt::errc::corrupt);
  CHECK(full.error().message().find("data-00000.bin: missing") != std::string::npos);
}

TEST_CASE("existing checkpoints are replaced only on request", "[save]") {
  ckpt::test::temp_dir dir;
  tree a = tree::dict({{"x", random_leaf(dtype::f32, {10}, 1)}});
  tree b = tree::dict({{"x", random_leaf(dtype::f32, {10}, 2)}});
  REQUIRE(ckpt::save_blocking(dir / "c", a, {}));
  auto again = ckpt::save_blocking(dir / "c", b, {});
  REQUIRE_FALSE(again);
  CHECK(again.error() == ckpt::errc::already_exists);
  CHECK(ckpt::load_blocking(dir / "c").value().tree == a);
  ckpt::save_options o;
  o.overwrite = true;
  REQUIRE(ckpt::save_blocking(dir / "c", b, {}, o));
  CHECK(ckpt::load_blocking(dir / "c").value().tree == b);
  // The replaced checkpoint is gone when the save returns (save_options::overwrite): no
  // temporary or trash directory is left for later.
  for (auto& e : fs::directory_iterator(dir.path())) {
    CHECK(e.path().filename().string() == "c");
  }
}

TEST_CASE("borrowed arrays may change right after staged", "[save][overlap]") {
  ckpt::test::temp_dir dir;
  std::vector<float> w(1 << 20);
  for (std::size_t i = 0; i < w.size(); ++i)
    w[i] = static_cast<float>(i);
  const std::vector<float> original = w;
  tree t = tree::dict({{"w", array::borrow(std::span<float>(w), {1 << 20}).value()}});
  auto h = ckpt::start_save(dir / "c", t, {}, small_chunks());
  REQUIRE(h.wait_staged());
  std::fill(w.begin(), w.end(), -5.0f);  // the training step goes on
  REQUIRE(h.wait_committed());
  auto got = ckpt::load_blocking(dir / "c").value();
  auto values = got.tree.find("w")->leaf().as<float>();
  CHECK(std::equal(values.begin(), values.end(), original.begin()));
  auto st = h.stats();
  CHECK(st.staged_s <= st.committed_s);
  CHECK(st.logical_bytes == w.size() * 4);
  CHECK(st.stored_bytes > 0);
}

TEST_CASE("a runtime may be let go while its saves finish", "[save][runtime]") {
  // The save's coroutines hold the runtime; whichever thread drops the last reference (often
  // the runtime's own pipeline or CPU thread) must not join itself.
  ckpt::test::temp_dir dir;
  tree t = tree::dict({{"w", random_leaf(dtype::f32, {64, 1024}, 7)}});
  for (int i = 0; i < 20; ++i) {
    ckpt::runtime_options ro;
    ro.cpu_threads = 1 + i % 2;
    auto o = small_chunks();
    o.runtime = ckpt::runtime::create(ro).value();
    auto h = ckpt::start_save(dir / ("c" + std::to_string(i)), t, {}, std::move(o));
    if (i % 2 == 0) {
      REQUIRE(h.wait_committed());  // then handle and runtime go at once
    }
  }
  // The odd saves were let go while running: they still finish and commit.
  auto committed = [](const fs::path& p) {
    auto r = ckpt::is_committed(p);
    return r && r.value();
  };
  for (int i = 0; i < 20; ++i) {
    const auto p = dir / ("c" + std::to_string(i));
    for (int tries = 0; tries < 500 && !committed(p); ++tries)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(committed(p));
    CHECK(ckpt::load_blocking(p).value().tree == t);
  }
}

TEST_CASE("shared leaves do not hold up staged", "[save][overlap]") {
  ckpt::test::temp_dir dir;
  auto buf = std::make_shared<std::vector<float>>(1 << 20, 1.5f);
  auto shared = array::share(dtype::f32, {1 << 20}, buf, std::as_bytes(std::span(*buf))).value();
  tree t = tree::dict({{"frozen", shared}});
  auto h = ckpt::start_save(dir / "c", t, {});
  REQUIRE(h.wait_committed());
  CHECK(ckpt::load_blocking(dir / "c").value().tree == t);
}

TEST_CASE("shared raw chunks are written from the leaf's own memory, aligned or not",
          "[save][overlap]") {
  // Random bytes stay raw; a page-aligned single-leaf chunk of a shared leaf is written
  // without a copy, a misaligned one through staging. Both must read back bit-exact.
  ckpt::test::temp_dir dir;
  const std::size_t n = (3u << 20) + 4096;  // several 256 KiB chunks
  std::shared_ptr<std::byte> mem(static_cast<std::byte*>(std::aligned_alloc(4096, n + 4096)),
                                 [](std::byte* p) { std::free(p); });
  REQUIRE(mem);
  auto bytes = ckpt::test::random_bytes(n + 4096, 11);
  std::memcpy(mem.get(), bytes.data(), n + 4096);
  const auto count = static_cast<std::int64_t>(n / 4);
  auto aligned = array::share(dtype::f32, {count}, mem, std::span<const std::byte>(mem.get(), n));
  auto shifted =
      array::share(dtype::f32, {count}, mem, std::span<const std::byte>(mem.get() + 4, n));
  REQUIRE(aligned);
  REQUIRE(shifted);
  tree t = tree::dict({{"aligned", aligned.value()}, {"shifted", shifted.value()}});
  auto st = ckpt::save_blocking(dir / "c", t, {}, small_chunks());
  REQUIRE(st);
  for (const auto& le : read_index(dir / "c").leaves) {
    for (const auto& c : le.chunks)
      CHECK(c.codec == ckpt::format::codec::raw);
  }
  CHECK(ckpt::load_blocking(dir / "c").value().tree == t);
}

TEST_CASE("reserve_staging faults in what a save of the tree takes, within the budget",
          "[save][runtime]") {
  ckpt::test::temp_dir dir;
  tree t = tree::dict({{"a", random_leaf(dtype::f32, {256, 1024}, 3)},   // 1 MiB: 4 chunks
                       {"b", random_leaf(dtype::f32, {64, 1024}, 4)}});  // 256 KiB: 1 chunk
  {
    ckpt::runtime_options ro;
    ro.staging_budget = 64ull << 20;
    auto o = small_chunks();
    o.runtime = ckpt::runtime::create(ro).value();
    const std::uint64_t got = ckpt::reserve_staging(t, o);
    CHECK(got >= 5 * (256u << 10));  // one buffer per write unit
    CHECK(got <= ro.staging_budget);
    CHECK(ckpt::reserve_staging(tree::dict(), o) == 0);
    REQUIRE(ckpt::save_blocking(dir / "c", t, {}, o));
    CHECK(ckpt::load_blocking(dir / "c").value().tree == t);
  }
  {
    ckpt::runtime_options ro;
    ro.staging_budget = 64ull << 20;  // the floor; a save of a bigger tree must still fit
    auto o = small_chunks();
    o.chunk_bytes = 16u << 20;
    o.runtime = ckpt::runtime::create(ro).value();
    tree big = tree::dict({{"w", array::zeros(dtype::u8, {96ll << 20}).value()}});  // 6 units
    CHECK(ckpt::reserve_staging(big, o) <= ro.staging_budget);
  }
}

TEST_CASE("a save writes one data file per 64 MiB by default, at most 4, or as many as asked",
          "[save]") {
  auto files_in = [](const fs::path& c) {
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator(c))
      n += e.path().filename().string().rfind("data-", 0) == 0;
    return n;
  };
  ckpt::test::temp_dir dir;
  ckpt::save_options o;
  o.compress = false;
  tree t = tree::dict({{"a", random_leaf(dtype::f32, {1 << 20}, 1)},   // 4 MiB
                       {"b", random_leaf(dtype::f32, {1 << 20}, 2)},   // 4 MiB
                       {"c", random_leaf(dtype::u8, {1 << 20}, 3)}});  // 1 MiB: 3 units
  CHECK(ckpt::save_options{}.data_files == 0);
  REQUIRE(ckpt::save_blocking(dir / "default", t, {}, o));
  CHECK(files_in(dir / "default") == 1);
  o.data_files = 3;
  REQUIRE(ckpt::save_blocking(dir / "three", t, {}, o));
  CHECK(files_in(dir / "three") == 3);
  o.data_files = 8;  // never more than one per write unit
  REQUIRE(ckpt::save_blocking(dir / "eight", t, {}, o));
  CHECK(files_in(dir / "eight") == 3);
  // 65 MiB of zeros (stored raw: compress off): two files by default.
  o.data_files = 0;
  tree big = tree::dict({{"w", array::zeros(dtype::u8, {65ll << 20}).value()}});
  REQUIRE(ckpt::save_blocking(dir / "big", big, {}, o));
  CHECK(files_in(dir / "big") == 2);
  for (const char* name : {"default", "three", "eight", "big"}) {
    auto l = ckpt::load_blocking(dir / name);
    REQUIRE(l);
    CHECK(l.value().tree == (std::string(name) == "big" ? big : t));
  }
  CHECK(ckpt::pipeline::auto_data_files(0) == 1);
  CHECK(ckpt::pipeline::auto_data_files(64ull << 20) == 1);
  CHECK(ckpt::pipeline::auto_data_files((64ull << 20) + 1) == 2);
  CHECK(ckpt::pipeline::auto_data_files(1ull << 40) == 4);
}

TEST_CASE("corrupt checkpoints are refused with the file and leaf named", "[load][corrupt]") {
  ckpt::test::temp_dir dir;
  tree t = tree::dict({{"w", random_leaf(dtype::f32, {256, 256}, 3)}});
  ckpt::save_options o;
  o.data_files = 1;
  REQUIRE(ckpt::save_blocking(dir / "c", t, {}, o));
  auto ix = read_index(dir / "c");
  const auto& chunk = ix.leaves[0].chunks[0];

  SECTION("a flipped bit in a data file") {
    flip_byte(dir / "c" / "data-00000.bin", chunk.offset + 100);
    auto r = ckpt::load_blocking(dir / "c");
    REQUIRE_FALSE(r);
    CHECK(r.error() == ckpt::errc::corrupt);
    CHECK(r.error().message().find("leaf \"w\"") != std::string::npos);
    CHECK(r.error().message().find("checksum mismatch") != std::string::npos);
    ckpt::load_options unchecked;
    unchecked.verify_checksums = false;
    CHECK(ckpt::load_blocking(dir / "c", nullptr, unchecked));  // the documented risk
  }
  SECTION("a truncated data file") {
    fs::resize_file(dir / "c" / "data-00000.bin", 4096);
    auto r = ckpt::load_blocking(dir / "c");
    REQUIRE_FALSE(r);
    CHECK(r.error() == ckpt::errc::corrupt);
    CHECK(r.error().message().find("truncated") != std::string::npos);
  }
  SECTION("a flipped bit in the index") {
    flip_byte(dir / "c" / "index.json", 20);
    auto r = ckpt::load_blocking(dir / "c");
    REQUIRE_FALSE(r);
    CHECK(r.error() == ckpt::errc::corrupt);
    CHECK(r.error().message().find("index.json: checksum mismatch") != std::string::npos);
  }
  SECTION("no commit marker") {
    fs::remove(dir / "c" / "COMMIT");
    auto r = ckpt::load_blocking(dir / "c");
    REQUIRE_FALSE(r);
    CHECK(r.error() == ckpt::errc::not_committed);
    CHECK_FALSE(ckpt::is_committed(dir / "c").value());
  }
  SECTION("changed metadata") {
    std::ofstream(dir / "c" / "metadata.json", std::ios::trunc) << "{\"x\":1}";
    auto r = ckpt::load_metadata_blocking(dir / "c");
    REQUIRE_FALSE(r);
    CHECK(r.error() == ckpt::errc::corrupt);
  }
  SECTION("no checkpoint at all") {
    auto r = ckpt::load_blocking(dir / "nothing");
    REQUIRE_FALSE(r);
    CHECK(r.error() == ckpt::errc::not_found);
  }
}

TEST_CASE("an async save is awaitable from a coroutine", "[save][async]") {
  ckpt::test::temp_dir dir;
  tree t = sample_tree();
  boost::asio::io_context ctx;
  std::optional<ckpt::result<void>> out;
  boost::asio::co_spawn(
      ctx,
      [&]() -> boost::asio::awaitable<void> {
        auto h = ckpt::start_save(dir / "c", t, {{"k", 1}}, small_chunks());
        auto s = co_await h.staged();
        if (!s) {
          out = s;
          co_return;
        }
        out = co_await h.committed();
        auto loaded = co_await ckpt::load(dir / "c");
        if (!loaded || !(loaded.value().tree == t))
          out = ckpt::fail(ckpt::errc::corrupt, "mismatch");
      },
      boost::asio::detached);
  ctx.run();
  ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  REQUIRE(out);
  CHECK(*out);
}
