// Sharded checkpoints with simulated ranks: an in-memory coordinator group, one thread per rank.
// Saves with 4 ranks in several slicings (rows, columns, a grid, replicas, duplicated slices),
// loads with 1, 2, 3 and 4 ranks in other slicings, bit-exact against the global arrays; plan
// errors and a failing rank reach every rank and leave nothing visible; ranged reads read
// little more than they need; damage is found.
#include "format/index.hpp"
#include "format/sharded.hpp"
#include "io/backend.hpp"
#include "run_coro.hpp"
#include "shard_support.hpp"
#include "support.hpp"

#include <ckpt/coordinator.hpp>
#include <ckpt/job.hpp>
#include <ckpt/load.hpp>
#include <ckpt/shard.hpp>
#include <ckpt/store.hpp>
#include <ckpt/verify.hpp>

#include <boost/describe/class.hpp>
#include <boost/json/parse.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <functional>
#include <thread>

namespace fs = std::filesystem;
using ckpt::dtype;
using ckpt::result;
using ckpt::slice;
using ckpt::test::make_globals;

namespace {

// Runs f(rank, coordinator) on `n` threads, one per rank of an in-memory group.
template <class T>
std::vector<T> run_ranks(int n,
                         const std::function<T(int, std::shared_ptr<ckpt::coordinator>)>& f) {
  auto group = ckpt::make_local_group(n);
  std::vector<std::optional<T>> out(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] { out[static_cast<std::size_t>(r)].emplace(f(r, group[r])); });
  for (auto& t : threads)
    t.join();
  std::vector<T> v;
  for (auto& o : out)
    v.push_back(std::move(*o));
  return v;
}

// Saves the reference globals with `n` ranks at `path`; returns every rank's result.
std::vector<result<ckpt::sharded_save_stats>> save_globals(
    const fs::path& path, int n, const std::vector<ckpt::test::global_leaf>& globals,
    ckpt::sharded_save_options options = {}) {
  return run_ranks<result<ckpt::sharded_save_stats>>(
      n, [&](int r, std::shared_ptr<ckpt::coordinator> c) {
        return ckpt::save_sharded_blocking(c, path, ckpt::test::rank_leaves(globals, r, n),
                                           {{"step", 7}, {"rank_says", r}}, options);
      });
}

std::vector<std::string> dir_names(const fs::path& p) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(p))
    out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Counts the bytes read through an engine (ranged reads read little).
class counting_backend final : public ckpt::io::backend {
 public:
  explicit counting_backend(std::unique_ptr<ckpt::io::backend> inner) : inner_(std::move(inner)) {}
  std::string_view name() const noexcept override { return "counting"; }
  void submit(ckpt::io::op* o) noexcept override {
    if (o->req.kind == ckpt::io::op_kind::read) read_ += o->req.length;
    inner_->submit(o);
  }
  void shutdown() noexcept override { inner_->shutdown(); }
  std::uint64_t read() const { return read_; }

 private:
  std::unique_ptr<ckpt::io::backend> inner_;
  std::atomic<std::uint64_t> read_{0};
};

template <class Backend>
std::pair<Backend*, std::shared_ptr<ckpt::runtime>> runtime_over() {
  auto b = std::make_unique<Backend>(ckpt::io::make_thread_backend({}).value());
  Backend* raw = b.get();
  auto engine = ckpt::io::make_engine(std::move(b)).value();
  ckpt::runtime_options ro;
  ro.cpu_threads = 2;
  ro.staging_budget = 64 << 20;
  return {raw, ckpt::runtime::create(engine, ro).value()};
}

}  // namespace

TEST_CASE("slices split dimensions into near-equal parts", "[shard]") {
  const ckpt::shape g{10, 4};
  CHECK(ckpt::row_slice(g, 0, 3) == slice{{0, 0}, {4, 4}});
  CHECK(ckpt::row_slice(g, 1, 3) == slice{{4, 0}, {3, 4}});
  CHECK(ckpt::row_slice(g, 2, 3) == slice{{7, 0}, {3, 4}});
  CHECK(ckpt::slice_along(g, 1, 1, 2) == slice{{0, 2}, {10, 2}});
  CHECK(ckpt::slice_along(g, 1, 3, 8) == slice{{0, 3}, {10, 1}});  // more parts than columns
  CHECK(ckpt::slice_along(g, 1, 5, 8) == slice{{0, 4}, {10, 0}});
  CHECK(ckpt::whole({}) == slice{{}, {}});
  CHECK(ckpt::row_slice({}, 2, 4) == slice{{}, {}});
  CHECK(ckpt::row_slice(g, 1, 3).to_string() == "[4:7, 0:4]");
  CHECK_THROWS_AS(ckpt::row_slice(g, 3, 3), std::invalid_argument);
  CHECK_THROWS_AS(ckpt::slice_along(g, 2, 0, 1), std::invalid_argument);
}

TEST_CASE("a local group's collectives and agree", "[shard][coordinator]") {
  auto single = ckpt::make_local_coordinator();
  CHECK(single->rank() == 0);
  CHECK(single->size() == 1);
  CHECK(single->barrier());
  CHECK(single->broadcast("x", 0).value() == "x");
  CHECK(single->gather("y", 0).value() == std::vector<std::string>{"y"});
  CHECK(single->broadcast("x", 1).error() == ckpt::errc::invalid_argument);

  auto out = run_ranks<std::string>(4, [](int r, std::shared_ptr<ckpt::coordinator> c) {
    std::string log;
    for (int round = 0; round < 20; ++round) {  // many rounds: no mixing between them
      auto b = c->broadcast("root" + std::to_string(round) + "-" + std::to_string(r), round % 4);
      auto g = c->gather(std::to_string(r * round), 1);
      if (!b || !g || !c->barrier()) return std::string("collective failed");
      if (b.value() != "root" + std::to_string(round) + "-" + std::to_string(round % 4)) {
        return "bad broadcast " + b.value();
      }
      if (r == 1) {
        for (int k = 0; k < 4; ++k)
          if (g.value().at(static_cast<std::size_t>(k)) != std::to_string(k * round))
            return std::string("bad gather");
      } else if (!g.value().empty()) {
        return std::string("gather to a non-root");
      }
    }
    // agree: ranks 1 and 3 fail; everyone sees rank 1's error, with its code.
    result<void> mine = ckpt::success();
    if (r == 1) mine = ckpt::system_error(ENOSPC, "disk full here");
    if (r == 3) mine = ckpt::fail(ckpt::errc::corrupt, "other");
    auto a = ckpt::agree(*c, mine);
    if (a) return std::string("agree succeeded");
    if (!(a.error() == std::errc::no_space_on_device)) return "wrong code " + a.error().what();
    log = a.error().message();
    auto ok = ckpt::agree(*c, ckpt::success());
    if (!ok) return std::string("agree on success failed");
    return log;
  });
  for (const auto& s : out)
    CHECK(s == "rank 1: disk full here (and 1 more failing rank)");
}

TEST_CASE("save with 4 ranks, load with 1, 2, 3 and 4 in other slicings, bit-exact",
          "[shard][save][load]") {
  const auto root = GENERATE(from_range(ckpt::test::test_roots()));
  ckpt::test::temp_dir dir(root);
  const auto globals = make_globals(11);
  const fs::path path = dir / "job" / "step_10";
  ckpt::sharded_save_options so;
  so.local.chunk_bytes = 16 << 10;  // many chunks per slice: ranged reads matter
  auto saved = save_globals(path, 4, globals, so);
  for (int r = 0; r < 4; ++r) {
    INFO("rank " << r);
    REQUIRE(saved[static_cast<std::size_t>(r)]);
    CHECK(saved[static_cast<std::size_t>(r)].value().ranks == 4);
  }
  std::uint64_t logical = 0;
  for (const auto& g : globals)
    logical += g.bytes.size();
  CHECK(saved[0].value().logical_bytes == logical);
  CHECK(saved[2].value().stored_bytes == saved[0].value().stored_bytes);

  // The layout: four rank checkpoints and the top-level files; no temporary left.
  CHECK(dir_names(path) == std::vector<std::string>{"COMMIT", "metadata.json", "rank-00000",
                                                    "rank-00001", "rank-00002", "rank-00003",
                                                    "sharded-index.json"});
  CHECK(dir_names(dir / "job") == std::vector<std::string>{"step_10"});
  CHECK(ckpt::is_committed(path).value());
  CHECK(ckpt::is_sharded_checkpoint(path).value());
  CHECK(ckpt::is_committed(path / "rank-00001").value());
  CHECK_FALSE(ckpt::is_sharded_checkpoint(path / "rank-00001").value());

  // The index: replicated and duplicated slices written once, by the lowest rank holding them.
  auto info = ckpt::read_sharded_info(path).value();
  CHECK(info.ranks == 4);
  CHECK(info.logical_bytes == logical);
  CHECK(info.metadata.at("rank_says").as_int64() == 0);  // rank 0's metadata
  REQUIRE(info.leaves.size() == globals.size());
  for (const auto& li : info.leaves) {
    INFO(li.path);
    if (li.path == "params/b" || li.path == "step") {
      CHECK(li.replicated);
      REQUIRE(li.slices.size() == 1);
      CHECK(li.slices[0].rank == 0);
    } else if (li.path == "empty") {
      CHECK(li.slices.size() == 1);  // four identical empty slices, kept once
    } else if (li.path == "sparse") {
      REQUIRE(li.slices.size() == 2);
      CHECK(li.slices[0].rank == 0);
      CHECK(li.slices[1].rank == 1);
    } else {
      CHECK(li.slices.size() == 4);
    }
  }

  // One process, the whole arrays.
  {
    auto full = ckpt::load_sharded_full_blocking(path).value();
    CHECK(full.metadata.at("step").as_int64() == 7);
    for (const auto& g : globals) {
      INFO(g.path);
      const auto* node = full.tree.find(g.path);
      REQUIRE(node);
      REQUIRE(node->is_leaf());
      CHECK(node->leaf().dtype() == g.dtype);
      CHECK(node->leaf().shape() == g.shape);
      const auto b = node->leaf().bytes();
      CHECK((b.size() == g.bytes.size() &&
             (b.empty() || std::memcmp(b.data(), g.bytes.data(), b.size()) == 0)));
    }
    CHECK(full.tree.find("a/b") == nullptr);
    CHECK(full.tree.get("a/b") != nullptr);  // the key "a/b", escaped in the path
  }
  // 1, 2, 3 and 4 ranks, each in the load slicing (columns where the save had rows, ...).
  for (int m : {1, 2, 3, 4}) {
    for (int r = 0; r < m; ++r) {
      INFO(m << " ranks, rank " << r);
      auto got = ckpt::load_sharded_blocking(path, ckpt::test::rank_requests(globals, r, m));
      REQUIRE(got);
      CHECK(got.value().leaves.size() == globals.size());
      CHECK(ckpt::test::compare(globals, got.value().leaves) == "");
      CHECK(got.value().metadata.at("step").as_int64() == 7);
    }
  }
  // 4 ranks in the save's own slicing: every wanted slice is a saved one and is read into its
  // memory as a load fills a template (no sink copy), here in 16 KiB chunks and, below, large
  // ones read straight from the file.
  for (int r = 0; r < 4; ++r) {
    INFO("the save's slicing, rank " << r);
    auto got = ckpt::load_sharded_blocking(
        path, ckpt::test::rank_requests(globals, r, 4, ckpt::test::layout::save));
    REQUIRE(got);
    CHECK(ckpt::test::compare(globals, got.value().leaves) == "");
  }
  {
    ckpt::test::temp_dir big_dir(root);
    auto big = make_globals(12);
    REQUIRE(save_globals(big_dir / "ck", 2, big)[0]);  // default (large) chunks
    for (int r = 0; r < 2; ++r) {
      auto got = ckpt::load_sharded_blocking(
          big_dir / "ck", ckpt::test::rank_requests(big, r, 2, ckpt::test::layout::save));
      REQUIRE(got);
      CHECK(ckpt::test::compare(big, got.value().leaves) == "");
    }
  }
  // Loading in place: writable shards are filled, not replaced.
  {
    auto req = ckpt::test::rank_requests(globals, 1, 2);
    std::vector<std::byte> mem(byte_size(dtype::f32, req[0].shards[0].where.extent).value());
    req[0].shards[0].data =
        ckpt::array::borrow(dtype::f32, req[0].shards[0].where.extent, std::span(mem)).value();
    auto got = ckpt::load_sharded_blocking(path, req).value();
    CHECK(got.leaves[0].shards[0].data.bytes().data() == mem.data());
    CHECK(ckpt::test::compare(globals, got.leaves) == "");
  }
  // The async forms.
  {
    auto got = ckpt::test::run(ckpt::load_sharded(path, ckpt::test::rank_requests(globals, 0, 3)));
    REQUIRE(got);
    CHECK(ckpt::test::compare(globals, got.value().leaves) == "");
  }
  auto rep = ckpt::verify_checkpoint_blocking(path).value();
  INFO((rep.problems.empty() ? std::string()
                             : rep.problems[0].file + ": " + rep.problems[0].message));
  CHECK(rep.ok());
  CHECK(rep.leaves == globals.size());
  CHECK(rep.chunks_checked == rep.chunks);
  CHECK(rep.chunks > 0);
}

TEST_CASE("a single-process sharded save and its store integration", "[shard][save]") {
  ckpt::test::temp_dir dir;
  const auto globals = make_globals(3);
  auto coord = ckpt::make_local_coordinator();
  ckpt::sharded_save_options so;
  so.local.job = boost::json::object{{"spec", "s"}};
  auto h = ckpt::start_sharded_save(coord, dir / "job" / "step_1",
                                    ckpt::test::rank_leaves(globals, 0, 1), {{"k", 1}}, so);
  REQUIRE(h.wait_staged());
  REQUIRE(h.wait_committed());
  CHECK(h.is_done());
  CHECK(h.stats().ranks == 1);
  CHECK(h.stats().committed_s >= h.stats().plan_s);
  // Listing, LATEST, metadata and job of a sharded checkpoint work as for an ordinary one.
  CHECK(ckpt::store::list_committed(dir / "job").value() == std::vector<std::string>{"step_1"});
  REQUIRE(ckpt::store::write_latest(dir / "job", "step_1"));
  CHECK(ckpt::store::read_latest(dir / "job").value() == "step_1");
  CHECK(ckpt::load_metadata_blocking(dir / "job" / "step_1").value().at("k").as_int64() == 1);
  CHECK(ckpt::load_job_blocking(dir / "job" / "step_1").value().at("spec") == "s");
  // A plain load says what it is.
  auto plain = ckpt::load_blocking(dir / "job" / "step_1");
  REQUIRE_FALSE(plain);
  CHECK(plain.error() == ckpt::errc::invalid_argument);
  CHECK_THAT(plain.error().message(), Catch::Contains("sharded checkpoint (1 ranks)"));
  // And load_sharded refuses an ordinary checkpoint.
  ckpt::tree t = ckpt::tree::dict({{"x", ckpt::array::zeros(dtype::f32, {4}).value()}});
  REQUIRE(ckpt::save_blocking(dir / "plain", t, {}));
  auto s = ckpt::load_sharded_full_blocking(dir / "plain");
  REQUIRE_FALSE(s);
  CHECK_THAT(s.error().message(), Catch::Contains("ordinary checkpoint"));
  // An existing name is kept unless overwrite; overwrite swaps atomically.
  auto again = ckpt::save_sharded_blocking(coord, dir / "job" / "step_1",
                                           ckpt::test::rank_leaves(make_globals(4), 0, 1), {});
  REQUIRE_FALSE(again);
  CHECK(again.error() == ckpt::errc::already_exists);
  so.local.overwrite = true;
  const auto other = make_globals(4);
  REQUIRE(ckpt::save_sharded_blocking(coord, dir / "job" / "step_1",
                                      ckpt::test::rank_leaves(other, 0, 1), {}, so));
  auto got =
      ckpt::load_sharded_blocking(dir / "job" / "step_1", ckpt::test::rank_requests(other, 0, 1));
  REQUIRE(got);
  CHECK(ckpt::test::compare(other, got.value().leaves) == "");
  CHECK(dir_names(dir / "job") == std::vector<std::string>{"LATEST", "step_1"});
}

TEST_CASE("a bad plan fails on every rank and writes nothing", "[shard][save]") {
  ckpt::test::temp_dir dir;
  const fs::path path = dir / "job" / "step_2";
  struct bad_case {
    const char* name;
    std::function<std::vector<ckpt::sharded_leaf>(int)> leaves;
    ckpt::errc code;
    const char* says;
  };
  auto leaf = [](int r, ckpt::shape g, slice s) {
    ckpt::sharded_leaf l;
    l.path = "w";
    l.dtype = dtype::f32;
    l.global_shape = std::move(g);
    l.shards.push_back({s, ckpt::array::zeros(dtype::f32, s.extent).value()});
    (void)r;
    return std::vector<ckpt::sharded_leaf>{l};
  };
  const std::vector<bad_case> cases = {
      {"overlap",
       [&](int r) {
         return leaf(r, {10, 4}, slice{{r == 2 ? 4 : 3 * r, 0}, {3 + (r == 2), 4}});
       },
       ckpt::errc::invalid_argument, "overlap"},
      {"gap",
       [&](int r) {
         return leaf(r, {10, 4}, slice{{2 * r, 0}, {2, 4}});
       },
       ckpt::errc::invalid_argument, "cover 24 of the 40 elements"},
      {"dtype disagreement",
       [&](int r) {
         auto l = leaf(r, {12, 4}, ckpt::row_slice({12, 4}, r, 3));
         if (r == 1) {
           l[0].dtype = dtype::i32;
           l[0].shards[0].data =
               ckpt::array::zeros(dtype::i32, l[0].shards[0].where.extent).value();
         }
         return l;
       },
       ckpt::errc::invalid_argument, "ranks disagree"},
      {"slice outside",
       [&](int r) {
         return leaf(r, {6, 4}, slice{{2 * r + 1, 0}, {2, 4}});
       },
       ckpt::errc::invalid_argument, "rank 2: leaf \"w\": slice [5:7, 0:4] is not inside"},
      {"spec data",
       [&](int r) {
         auto l = leaf(r, {6}, ckpt::row_slice({6}, r, 3));
         if (r == 0) l[0].shards[0].data = ckpt::array::spec(dtype::f32, {2}).value();
         return l;
       },
       ckpt::errc::invalid_argument, "rank 0: leaf \"w\": slice [0:2] has no bytes"},
      {"path not UTF-8",
       [&](int r) {
         auto l = leaf(r, {6}, ckpt::row_slice({6}, r, 3));
         l[0].path = "w\xff";
         return l;
       },
       ckpt::errc::invalid_argument, "the path is not valid UTF-8"},
      {"rank 33",
       [&](int r) {
         ckpt::shape g(33, 1);
         g[0] = 3;
         ckpt::slice s{ckpt::shape(33, 0), ckpt::shape(33, 1)};
         s.offset[0] = r;
         return leaf(r, g, s);
       },
       ckpt::errc::limit_exceeded,
       "a reader would refuse this save's sharded-index.json: sharded-index.json: leaves[0].shape: "
       "more than 32 dimensions"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto out = run_ranks<result<ckpt::sharded_save_stats>>(
        3, [&](int r, std::shared_ptr<ckpt::coordinator> co) {
          return ckpt::save_sharded_blocking(co, path, c.leaves(r), {});
        });
    for (int r = 0; r < 3; ++r) {
      INFO("rank " << r);
      REQUIRE_FALSE(out[static_cast<std::size_t>(r)]);
      CHECK(out[static_cast<std::size_t>(r)].error() == c.code);
      CHECK_THAT(out[static_cast<std::size_t>(r)].error().message(), Catch::Contains(c.says));
      CHECK(out[static_cast<std::size_t>(r)].error().message() == out[0].error().message());
    }
    CHECK((!fs::exists(dir / "job") || dir_names(dir / "job").empty()));
  }
}

TEST_CASE("one rank's failing save reaches every rank; nothing new becomes visible",
          "[shard][save][faults]") {
  ckpt::test::temp_dir dir;
  const auto globals = make_globals(5);
  REQUIRE(save_globals(dir / "job" / "step_1", 4, globals)[0]);
  REQUIRE(ckpt::store::write_latest(dir / "job", "step_1"));
  auto [backend, bad_rt] = runtime_over<ckpt::test::failing_writes>();
  (void)backend;
  auto out = run_ranks<result<ckpt::sharded_save_stats>>(
      4, [&, rt = bad_rt](int r, std::shared_ptr<ckpt::coordinator> c) {
        ckpt::sharded_save_options so;
        so.local.chunk_bytes = 16 << 10;
        if (r == 2) so.local.runtime = rt;
        return ckpt::save_sharded_blocking(c, dir / "job" / "step_2",
                                           ckpt::test::rank_leaves(make_globals(6), r, 4), {}, so);
      });
  for (int r = 0; r < 4; ++r) {
    INFO("rank " << r);
    REQUIRE_FALSE(out[static_cast<std::size_t>(r)]);
    CHECK(out[static_cast<std::size_t>(r)].error() == std::errc::io_error);
    CHECK_THAT(out[static_cast<std::size_t>(r)].error().message(), Catch::Contains("rank 2: "));
  }
  // No step_2, no temporary directory; LATEST still names step_1, which loads.
  CHECK(dir_names(dir / "job") == std::vector<std::string>{"LATEST", "step_1"});
  CHECK(ckpt::store::read_latest(dir / "job").value() == "step_1");
  auto got =
      ckpt::load_sharded_blocking(dir / "job" / "step_1", ckpt::test::rank_requests(globals, 0, 1));
  REQUIRE(got);
  CHECK(ckpt::test::compare(globals, got.value().leaves) == "");
}

TEST_CASE("a sharded load reads only the chunks its slices need", "[shard][load]") {
  ckpt::test::temp_dir dir;
  const fs::path path = dir / "big";
  // One 8 MiB f32 leaf [2048, 1024], rows split by 4 ranks, 256 KiB chunks.
  ckpt::test::global_leaf g{"w", dtype::f32, {2048, 1024}, ckpt::test::random_bytes(8 << 20, 9)};
  const std::vector<ckpt::test::global_leaf> globals{g};
  auto saved = run_ranks<result<ckpt::sharded_save_stats>>(
      4, [&](int r, std::shared_ptr<ckpt::coordinator> c) {
        ckpt::sharded_save_options so;
        so.local.chunk_bytes = 256 << 10;
        so.local.compress = false;
        ckpt::sharded_leaf l;
        l.path = "w";
        l.dtype = dtype::f32;
        l.global_shape = g.shape;
        const slice s = ckpt::row_slice(g.shape, r, 4);
        l.shards.push_back({s, ckpt::test::owned(dtype::f32, s.extent, ckpt::test::extract(g, s))});
        return ckpt::save_sharded_blocking(c, path, {l}, {}, so);
      });
  REQUIRE(saved[0]);
  auto read_for = [&](slice s) {
    auto [counter, rt] = runtime_over<counting_backend>();
    ckpt::load_options lo;
    lo.runtime = rt;
    auto got = ckpt::load_sharded_blocking(
        path, {ckpt::sharded_leaf::spec("w", dtype::f32, g.shape, {s}).value()}, lo);
    REQUIRE(got);
    CHECK(ckpt::test::compare(globals, got.value().leaves) == "");
    return counter->read();
  };
  const std::uint64_t quarter = 2 << 20;
  // Rows [100, 612) of 2048: 2 MiB, inside saved slices 0 and 1; read at most one chunk more at
  // each end, plus the small files.
  const std::uint64_t rows = read_for(slice{{100, 0}, {512, 1024}});
  CHECK(rows >= quarter);
  CHECK(rows <= quarter + 2 * (256 << 10) + (64 << 10));
  // Exactly one saved slice: exactly its bytes.
  CHECK(read_for(ckpt::row_slice(g.shape, 2, 4)) <= quarter + (64 << 10));
  // Columns need every row: all 8 MiB.
  CHECK(read_for(ckpt::slice_along(g.shape, 1, 0, 4)) >= 4 * quarter);
}

TEST_CASE("sharded loads check the request and find damage", "[shard][load][corrupt]") {
  ckpt::test::temp_dir dir;
  const auto globals = make_globals(8);
  const fs::path path = dir / "ck";
  ckpt::sharded_save_options so;
  so.local.compress = false;
  so.local.chunk_bytes = 4096;
  REQUIRE(save_globals(path, 2, globals, so)[0]);

  SECTION("mismatched requests are all reported; partial skips them") {
    auto req = ckpt::test::rank_requests(globals, 0, 1);
    req[0].global_shape = {1000, 64};  // params/w is [1001, 64]
    req[0].shards = {
        {ckpt::row_slice({1000, 64}, 0, 1), ckpt::array::spec(dtype::f32, {1000, 64}).value()}};
    req.push_back(ckpt::sharded_leaf::spec("nope", dtype::f32, {3}, {ckpt::whole({3})}).value());
    auto r = ckpt::load_sharded_blocking(path, req);
    REQUIRE_FALSE(r);
    CHECK(r.error() == ckpt::errc::template_mismatch);
    CHECK_THAT(r.error().message(), Catch::Contains("2 mismatches"));
    CHECK_THAT(r.error().message(), Catch::Contains("\"params/w\": wanted f32[1000, 64]"));
    CHECK_THAT(r.error().message(), Catch::Contains("missing in checkpoint: \"nope\""));
    ckpt::load_options lo;
    lo.partial = true;
    auto p = ckpt::load_sharded_blocking(path, req, lo);
    REQUIRE(p);
    CHECK(p.value().leaves.size() == globals.size() - 1);
    CHECK(ckpt::test::compare(globals, p.value().leaves) == "");
  }
  SECTION("a request slice outside the leaf is an invalid argument") {
    auto req = ckpt::test::rank_requests(globals, 0, 1);
    req[2].shards[0].where.offset[0] = 5;
    auto r = ckpt::load_sharded_blocking(path, req);
    REQUIRE_FALSE(r);
    CHECK(r.error() == ckpt::errc::invalid_argument);
  }
  SECTION("a damaged chunk fails the slices that need it, not the others") {
    // params/w rows [0, 501) are rank 0's; flip a byte near the start of its data file.
    const fs::path data = path / "rank-00000" / "data-00000.bin";
    {
      std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(100);
      char c = 0;
      f.read(&c, 1);
      c = static_cast<char>(c ^ 0x40);
      f.seekp(100);
      f.write(&c, 1);
    }
    auto rep = ckpt::verify_checkpoint_blocking(path).value();
    CHECK_FALSE(rep.ok());
    REQUIRE(rep.problems.size() >= 1);
    CHECK(rep.problems[0].file == "rank-00000/data-00000.bin");
    auto all = ckpt::load_sharded_full_blocking(path);
    REQUIRE_FALSE(all);
    CHECK(all.error() == ckpt::errc::corrupt);
    CHECK_THAT(all.error().message(), Catch::Contains("checksum mismatch"));
    // Rank 0's own slice as it was saved (read into place, not through a sink): still verified.
    auto r0 = ckpt::load_sharded_blocking(
        path, {ckpt::sharded_leaf::spec("params/w", dtype::f32, {1001, 64},
                                        {ckpt::row_slice({1001, 64}, 0, 2)})
                   .value()});
    REQUIRE_FALSE(r0);
    CHECK(r0.error() == ckpt::errc::corrupt);
    CHECK_THAT(r0.error().message(), Catch::Contains("checksum mismatch"));
    // Rank 1's rows of params/w do not touch that chunk.
    auto r1 = ckpt::load_sharded_blocking(
        path, {ckpt::sharded_leaf::spec("params/w", dtype::f32, {1001, 64},
                                        {ckpt::row_slice({1001, 64}, 1, 2)})
                   .value()});
    REQUIRE(r1);
    CHECK(ckpt::test::compare(globals, r1.value().leaves) == "");
  }
  SECTION("a rank directory from another save is refused") {
    ckpt::test::temp_dir other_dir;
    REQUIRE(save_globals(other_dir / "ck", 2, make_globals(9), so)[0]);
    fs::remove_all(path / "rank-00001");
    fs::rename(other_dir / "ck" / "rank-00001", path / "rank-00001");
    auto r = ckpt::load_sharded_full_blocking(path);
    REQUIRE_FALSE(r);
    CHECK(r.error() == ckpt::errc::corrupt);
    CHECK_THAT(r.error().message(), Catch::Contains("another save"));
    auto rep = ckpt::verify_checkpoint_blocking(path).value();
    CHECK_FALSE(rep.ok());
    bool found = false;
    for (const auto& p : rep.problems)
      found = found || p.file == "rank-00001/COMMIT";
    CHECK(found);
  }
  SECTION("a damaged sharded index or COMMIT: not a checkpoint") {
    {
      std::ofstream f(path / "sharded-index.json", std::ios::app);
      f << " ";
    }
    CHECK_FALSE(ckpt::is_committed(path).value());
    CHECK_FALSE(ckpt::is_sharded_checkpoint(path).value());
    auto r = ckpt::load_sharded_full_blocking(path);
    REQUIRE_FALSE(r);
    CHECK(r.error() == ckpt::errc::corrupt);
  }
}

#ifdef CKPT_INSPECT_BIN
namespace {
// ckpt-inspect's exit code and stdout (stderr discarded).
std::pair<int, std::string> inspect(const std::string& args) {
  const std::string cmd = std::string("NO_COLOR=1 '") + CKPT_INSPECT_BIN + "' " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}
}  // namespace

TEST_CASE("ckpt-inspect shows the sharding of each leaf", "[shard][inspect]") {
  ckpt::test::temp_dir dir;
  const auto globals = make_globals(12);
  const fs::path path = dir / "job" / "step_3";
  REQUIRE(save_globals(path, 4, globals)[0]);
  const std::string p = "'" + path.string() + "'";

  auto [rc, text] = inspect("show " + p);
  INFO(text);
  CHECK(rc == 0);
  CHECK_THAT(text, Catch::Contains("sharded checkpoint"));
  CHECK_THAT(text, Catch::Contains("4 ranks"));
  CHECK_THAT(text, Catch::Matches("(.|\n)*w +f32 +\\[1001, 64\\].*4 slices on dim 0 \\(ranks "
                                  "0-3\\)(.|\n)*"));
  CHECK_THAT(text, Catch::Contains("4 slices on dims 0,1 (ranks 0-3)"));
  CHECK_THAT(text, Catch::Contains("replicated (rank 0)"));
  CHECK_THAT(text, Catch::Contains("2 slices on dim 0 (ranks 0-1)"));

  auto [lrc, leaf] = inspect("show " + p + " --leaf opt/m");
  CHECK(lrc == 0);
  CHECK_THAT(leaf, Catch::Contains("[64:128, 129:258]"));
  CHECK_THAT(leaf, Catch::Contains("rank-00003 opt~1m/0"));

  auto [jrc, json] = inspect("show " + p + " --json");
  CHECK(jrc == 0);
  auto v = boost::json::parse(json).as_object();
  CHECK(v.at("sharded").as_bool());
  CHECK(v.at("ranks").as_array().size() == 4);
  bool seen = false;
  for (const auto& l : v.at("leaves").as_array()) {
    const auto& o = l.as_object();
    if (o.at("path") != "params/emb") continue;
    seen = true;
    CHECK(o.at("split_dims").as_array() == boost::json::array{1});
    CHECK(o.at("slices").as_array().size() == 4);
    CHECK(o.at("slices").as_array()[2].as_object().at("offset") == boost::json::array{0, 17, 0});
  }
  CHECK(seen);

  auto [vrc, verify] = inspect("verify " + p);
  CHECK(vrc == 0);
  auto [list_rc, list] = inspect("list '" + (dir / "job").string() + "' --json");
  CHECK(list_rc == 0);
  CHECK(boost::json::parse(list).at("checkpoints").as_array()[0].at("ranks") == 4);
  auto [drc, diff] = inspect("diff " + p + " " + p);
  CHECK(drc == 2);
  CHECK_THAT(diff, Catch::Contains("is a sharded checkpoint (4 ranks)"));

  fs::remove(path / "rank-00002" / "data-00000.bin");
  auto [brc, bad] = inspect("verify " + p);
  CHECK(brc == 1);
  CHECK_THAT(bad, Catch::Contains("rank-00002/data-00000.bin"));
}
#endif

namespace {

struct shard_job_config {
  int rows = 0;
};
BOOST_DESCRIBE_STRUCT(shard_job_config, (), (rows))

// A job whose state is one f32 [rows, 8] array, rows split across its hosts.
class shard_job : public ckpt::restoreable_job<shard_job_config> {
 public:
  using restoreable_job::restoreable_job;
  std::vector<float> mine;  // this host's rows
  slice my_slice() const {
    return ckpt::row_slice({config().rows, 8}, static_cast<int>(spec().cluster.host_index),
                           static_cast<int>(spec().cluster.host_count));
  }
  std::vector<ckpt::sharded_leaf> leaves() {
    ckpt::sharded_leaf l;
    l.path = "w";
    l.dtype = dtype::f32;
    l.global_shape = {config().rows, 8};
    const slice s = my_slice();
    mine.resize(static_cast<std::size_t>(s.extent[0] * 8));
    l.shards.push_back({s, ckpt::array::borrow(std::span(mine), s.extent).value()});
    return {l};
  }
  boost::asio::awaitable<result<void>> run() override { co_return ckpt::success(); }
  boost::asio::awaitable<result<void>> restore_from_path(fs::path rel_path) override {
    auto op = get_sharded_tree_and_metadata_from_path(rel_path, leaves());
    auto got = co_await std::move(op);
    if (!got) co_return ckpt::fail(std::move(got).error());
    co_return ckpt::success();
  }
};

}  // namespace

TEST_CASE("jobs of a multi-host run take their hosts from the coordinator", "[shard][job]") {
  ckpt::test::temp_dir dir;
  ckpt::execution_spec spec{"proj", "grp", "job", "run-1", {dir.path(), 0, 1}};
  auto out = run_ranks<std::string>(3, [&](int r, std::shared_ptr<ckpt::coordinator> c) {
    shard_job job(spec, shard_job_config{10}, c);
    if (job.spec().cluster.host_index != static_cast<std::uint32_t>(r) ||
        job.spec().cluster.host_count != 3) {
      return std::string("hosts not from the coordinator");
    }
    if (!job.cleanup_stale()) return std::string("cleanup failed");
    auto l = job.leaves();
    const slice s = job.my_slice();
    for (std::size_t i = 0; i < job.mine.size(); ++i)
      job.mine[i] = static_cast<float>(s.offset[0] * 8 + static_cast<std::int64_t>(i));
    auto saved = job.save_sharded_tree_and_metadata_blocking("step_5", l, {{"step", 5}});
    if (!saved) return "save: " + saved.error().what();
    auto reg = job.register_latest_blocking("step_5");
    if (!reg) return "register: " + reg.error().what();
    // LATEST is durable on every host once register_latest returned.
    auto latest = shard_job::latest_blocking(job.spec());
    if (!latest || !latest.value() || *latest.value() != "step_5") return std::string("LATEST");
    if (shard_job::checkpoints_blocking(job.spec()).value() != std::vector<std::string>{"step_5"}) {
      return std::string("checkpoints");
    }
    if (job.get_metadata_blocking("step_5").value().at("step") != 5) return std::string("meta");
    // The next save is differential against LATEST, each host against its part of step_5:
    // nothing changed, so everything is shared.
    auto next = job.save_sharded_tree_and_metadata_blocking("step_6", l, {{"step", 6}});
    if (!next) return "second save: " + next.error().what();
    const auto& local = next.value().local;
    if (local.logical_bytes == 0 || local.shared_bytes != local.logical_bytes) {
      return "not differential: shared " + std::to_string(local.shared_bytes) + " of " +
             std::to_string(local.logical_bytes) + " (" + local.base_note + ")";
    }
    return std::string("ok");
  });
  for (const auto& o : out)
    CHECK(o == "ok");
  // Two hosts resume from it (another host count): each gets its rows back.
  auto resumed = run_ranks<std::string>(2, [&](int r, std::shared_ptr<ckpt::coordinator> c) {
    auto caller = spec;
    caller.cluster.hosts_from(*c);
    auto got = shard_job::from_checkpoint_blocking<shard_job>("step_5", caller, nullptr, true);
    if (!got) return "restore: " + got.error().what();
    auto& job = *got.value().first;
    job.set_coordinator(c);
    if (job.spec().cluster.host_index != static_cast<std::uint32_t>(r)) return std::string("host");
    if (job.config().rows != 10) return std::string("config");
    auto again = job.get_sharded_tree_and_metadata_blocking("step_5", job.leaves());
    if (!again) return again.error().what();
    const slice s = job.my_slice();
    for (std::size_t i = 0; i < job.mine.size(); ++i) {
      if (job.mine[i] != static_cast<float>(s.offset[0] * 8 + static_cast<std::int64_t>(i)))
        return std::string("wrong value");
    }
    return std::string("ok");
  });
  for (const auto& o : resumed)
    CHECK(o == "ok");
}

namespace {
// The README's multi-host example (keep the two in step); `coord` comes from
// make_mpi_coordinator there, from an in-memory group here.
std::string readme_sharded(std::shared_ptr<ckpt::coordinator> coord, const std::string& dir) {
  const ckpt::shape global{4096, 1024};
  const ckpt::slice mine = ckpt::row_slice(global, coord->rank(), coord->size());
  std::vector<float> w(static_cast<std::size_t>(mine.extent[0] * 1024), 1.0f);  // my rows
  ckpt::sharded_leaf leaf{"params/w",
                          ckpt::dtype::f32,
                          global,
                          {{mine, ckpt::array::borrow(std::span(w), mine.extent).value()}}};
  auto h = ckpt::start_sharded_save(coord, dir + "/run1/step_100", {leaf}, {{"step", 100}});
  if (!h.wait_staged()) return "staged";     // w may change from here on
  if (!h.wait_committed()) return "commit";  // committed everywhere, or one error everywhere

  // Any number of ranks, any slicing: each reads only the chunks it needs.
  auto got = ckpt::load_sharded_blocking(
      dir + "/run1/step_100",
      {ckpt::sharded_leaf::spec("params/w", ckpt::dtype::f32, global,
                                {ckpt::slice_along(global, 1, coord->rank(), coord->size())})
           .value()});
  if (!got) return got.error().what();
  for (float x : got.value().leaves[0].shards[0].data.as<float>())
    if (x != 1.0f) return "value";
  return "ok";
}
}  // namespace

TEST_CASE("the README's multi-host example", "[shard][readme]") {
  ckpt::test::temp_dir dir;
  auto out = run_ranks<std::string>(
      4, [&](int, std::shared_ptr<ckpt::coordinator> c) { return readme_sharded(c, dir.path()); });
  for (const auto& o : out)
    CHECK(o == "ok");
}

TEST_CASE("the sharded index parser refuses hostile and inconsistent indexes", "[shard][format]") {
  namespace f = ckpt::format;
  f::sharded_index ix;
  ix.ranks = {{"rank-00000", 200, 1}, {"rank-00001", 201, 2}};
  f::sharded_leaf_entry le;
  le.path = "a/w";
  le.dtype = dtype::f32;
  le.shape = {4, 2};
  le.num_bytes = 32;
  le.slices = {{{{0, 0}, {2, 2}}, 0, "a~1w/0"}, {{{2, 0}, {2, 2}}, 1, "a~1w/0"}};
  ix.leaves = {le};
  const std::string good = f::encode_sharded_index(ix);
  auto parsed = f::parse_sharded_index(good);
  REQUIRE(parsed);
  CHECK(f::encode_sharded_index(parsed.value()) == good);
  CHECK(parsed.value().leaves[0].slices[1].where == f::box{{2, 0}, {2, 2}});

  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const auto at = s.find(from);
    REQUIRE(at != std::string::npos);
    s.replace(at, from.size(), to);
    return s;
  };
  struct bad {
    std::string json;
    const char* says;
    ckpt::errc code = ckpt::errc::corrupt;
  };
  const std::vector<bad> cases = {
      {replace("[2,0],[2,2]", "[1,0],[2,2]"), "overlap"},
      {replace("[2,0],[2,2]", "[2,0],[1,2]"), "cover 6 of the 8"},
      {replace("[2,0],[2,2]", "[3,0],[2,2]"), "not inside"},
      {replace("[1,\"a~1w/0\"", "[2,\"a~1w/0\""), "there are 2 ranks"},
      {replace("[2,0],[2,2]", "[2,0,0],[2,2,1]"), "dimensions"},
      {replace("\"replicated\":false", "\"replicated\":true"), "replicated"},
      {replace("\"dir\":\"rank-00001\"", "\"dir\":\"../x\""), "plain directory name"},
      {replace("\"dir\":\"rank-00001\"", "\"dir\":\"rank-00000\""), "appears twice"},
      {replace("\"version\":[1,0]", "\"version\":[2,0]"), "newer", ckpt::errc::unsupported_version},
      {replace("\"version\":[1,0]", "\"version\":[1,0],\"extra\":1"), "unknown key"},
      {replace("\"version\":[1,0]", "\"version\":[1,0],\"ranks\":[]"), "duplicate key"},
      {replace("\"shape\":[4,2]", "\"shape\":[4.0,2]"), "non-negative integer"},
      {replace("\"dtype\":\"f32\"", "\"dtype\":\"f31\""), "unknown dtype"},
      {replace("\"format\":\"ckpt-sharded-index\"", "\"format\":\"ckpt-index\""), "format is"},
      {replace("\"xxh3\":\"0000000000000001\"", "\"xxh3\":\"1\""), "xxh3"},
      {replace("{\"path\":\"a/w\"",
               "{\"path\":\"a/w\",\"dtype\":\"f32\",\"shape\":[4,2],\"replicated\":"
               "false,\"slices\":[]},{\"path\":\"a\""),
       "lies below the leaf"},
      {good.substr(0, good.size() - 3), "malformed JSON"},
  };
  for (const auto& c : cases) {
    INFO(c.json);
    auto r = f::parse_sharded_index(c.json);
    REQUIRE_FALSE(r);
    CHECK(r.error() == c.code);
    CHECK_THAT(r.error().message(), Catch::Contains(c.says));
  }
  // The commit marker round-trips and a plain COMMIT is told apart.
  f::sharded_commit cm;
  cm.index_bytes = 10;
  cm.ranks = 2;
  cm.has_job = true;
  const std::string text = f::encode_sharded_commit(cm);
  CHECK(f::is_sharded_commit_text(text));
  auto back = f::parse_sharded_commit(text);
  REQUIRE(back);
  CHECK(back.value().ranks == 2);
  CHECK(back.value().has_job);
  CHECK_FALSE(f::is_sharded_commit_text(f::encode_commit({})));
  CHECK_FALSE(f::parse_sharded_commit(f::encode_commit({})));
}

TEST_CASE("many ranks: 20 save in rows and a 4 x 5 grid, 3 load in columns", "[shard][load]") {
  ckpt::test::temp_dir dir;
  const fs::path path = dir / "many";
  std::vector<ckpt::test::global_leaf> globals = {
      {"rows", dtype::f32, {1001, 64}, ckpt::test::random_bytes(1001 * 64 * 4, 31)},
      {"grid", dtype::u16, {40, 50}, ckpt::test::random_bytes(40 * 50 * 2, 32)},
  };
  auto grid_slice = [](const ckpt::shape& g, int r) {
    const slice a = ckpt::row_slice(g, r / 5, 4), b = ckpt::slice_along(g, 1, r % 5, 5);
    return slice{{a.offset[0], b.offset[1]}, {a.extent[0], b.extent[1]}};
  };
  auto saved = run_ranks<result<ckpt::sharded_save_stats>>(
      20, [&](int r, std::shared_ptr<ckpt::coordinator> c) {
        std::vector<ckpt::sharded_leaf> mine;
        for (const auto& g : globals) {
          const slice s =
              g.path == "rows" ? ckpt::row_slice(g.shape, r, 20) : grid_slice(g.shape, r);
          mine.push_back({g.path,
                          g.dtype,
                          g.shape,
                          {{s, ckpt::test::owned(g.dtype, s.extent, ckpt::test::extract(g, s))}}});
        }
        ckpt::sharded_save_options so;
        so.local.chunk_bytes = 4096;
        return ckpt::save_sharded_blocking(c, path, std::move(mine), {}, so);
      });
  for (const auto& s : saved)
    REQUIRE(s);
  CHECK(ckpt::read_sharded_info(path).value().leaves[1].slices.size() == 20);
  for (int r = 0; r < 3; ++r) {
    std::vector<ckpt::sharded_leaf> want;
    for (const auto& g : globals)
      want.push_back(
          ckpt::sharded_leaf::spec(g.path, g.dtype, g.shape, {ckpt::slice_along(g.shape, 1, r, 3)})
              .value());
    auto got = ckpt::load_sharded_blocking(path, want);
    REQUIRE(got);
    CHECK(ckpt::test::compare(globals, got.value().leaves) == "");
  }
  // An odd region across many saved slices of the grid, and a single row of the rows.
  const std::vector<std::pair<std::size_t, slice>> regions = {{1, slice{{7, 3}, {29, 41}}},
                                                              {0, slice{{500, 0}, {1, 64}}}};
  for (const auto& [leaf, t] : regions) {
    const auto& g = globals[leaf];
    auto got = ckpt::load_sharded_blocking(
        path, {ckpt::sharded_leaf::spec(g.path, g.dtype, g.shape, {t}).value()});
    REQUIRE(got);
    CHECK(ckpt::test::compare(globals, got.value().leaves) == "");
  }
}

TEST_CASE("a sharded save cancelled on one rank fails on every rank and leaves nothing",
          "[shard][save]") {
  ckpt::test::temp_dir dir;
  const auto globals = make_globals(4);
  const fs::path path = dir / "job" / "step_1";
  auto got = run_ranks<result<void>>(2, [&](int r, std::shared_ptr<ckpt::coordinator> c) {
    auto h = ckpt::start_sharded_save(c, path, ckpt::test::rank_leaves(globals, r, 2), {});
    if (r == 1) h.cancel();
    return h.wait_committed();
  });
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    REQUIRE_FALSE(got[static_cast<std::size_t>(r)]);
    CHECK_THAT(got[static_cast<std::size_t>(r)].error().message(), Catch::Contains("cancelled"));
  }
  CHECK_FALSE(fs::exists(path));
  CHECK(dir_names(dir / "job").empty());
  // The next save of the same name goes through.
  auto again = save_globals(path, 2, globals);
  CHECK(again[0]);
  CHECK(again[1]);
}

TEST_CASE("a sharded save against a sharded base shares each rank's unchanged chunks",
          "[shard][diff]") {
  ckpt::test::temp_dir dir;
  const auto globals = make_globals(21);
  const fs::path base = dir / "job" / "step_1", next = dir / "job" / "step_2";
  ckpt::sharded_save_options so;
  so.local.chunk_bytes = 16 << 10;
  for (const auto& r : save_globals(base, 2, globals, so))
    REQUIRE(r);
  // Step 2: every 16 KiB chunk of params/w changes, nothing else does.
  auto changed = globals;
  REQUIRE(changed[0].path == "params/w");
  for (std::size_t i = 0; i < changed[0].bytes.size(); i += 4096)
    changed[0].bytes[i] ^= 0x5a;
  ckpt::sharded_save_options diff = so;
  diff.local.base = base;
  auto out = save_globals(next, 2, changed, diff);
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    REQUIRE(out[static_cast<std::size_t>(r)]);
    const auto& local = out[static_cast<std::size_t>(r)].value().local;
    const auto w_rows = ckpt::row_slice({1001, 64}, r, 2).extent[0];
    CHECK(local.shared_bytes == local.logical_bytes - static_cast<std::uint64_t>(w_rows) * 64 * 4);
    CHECK(local.shared_bytes > 0);
  }
  // Self-contained: the base goes, step 2 loads bit-exact in any slicing and verifies.
  fs::remove_all(base);
  for (int m : {1, 2}) {
    for (int r = 0; r < m; ++r) {
      auto got = ckpt::load_sharded_blocking(next, ckpt::test::rank_requests(changed, r, m));
      REQUIRE(got);
      CHECK(ckpt::test::compare(changed, got.value().leaves) == "");
    }
  }
  CHECK(ckpt::verify_checkpoint_blocking(next).value().ok());
  // A base without this rank's part: an error on every rank (nothing visible), or with
  // base_optional that rank's part in full.
  ckpt::sharded_save_options three = so;
  three.local.base = next;
  auto refused = save_globals(dir / "job" / "step_3", 3, changed, three);
  for (const auto& r : refused) {
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message(), Catch::Contains("rank-00002"));
  }
  CHECK_FALSE(fs::exists(dir / "job" / "step_3"));
  three.local.base_optional = true;
  auto saved = save_globals(dir / "job" / "step_3", 3, changed, three);
  for (const auto& r : saved)
    REQUIRE(r);
  CHECK(saved[2].value().local.shared_bytes == 0);
  CHECK_FALSE(saved[2].value().local.base_note.empty());
  auto got = ckpt::load_sharded_full_blocking(dir / "job" / "step_3");
  REQUIRE(got);
}
