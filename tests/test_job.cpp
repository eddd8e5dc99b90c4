// The job lifecycle: execution specs and path resolution, save/load through jobs (own and other
// jobs' checkpoints, partial, metadata only), LATEST, listing order, from_checkpoint with and
// without resume, done(), retention and start-up cleanup.
#include "support.hpp"

#include <ckpt/job.hpp>
#include <ckpt/store.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/describe/class.hpp>
#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <span>

namespace fs = std::filesystem;
namespace json = boost::json;
using ckpt::array;
using ckpt::dtype;
using ckpt::errc;
using ckpt::execution_spec;
using ckpt::result;
using ckpt::tree;

namespace {

struct test_config {
  int hidden = 4;
  double lr = 0.1;
  std::string name = "base";
  json::object extra;
};
BOOST_DESCRIBE_STRUCT(test_config, (), (hidden, lr, name, extra))

// A job whose state is one f32 vector and a step counter.
class test_job : public ckpt::restoreable_job<test_config> {
 public:
  test_job(execution_spec spec, test_config config)
      : restoreable_job(std::move(spec), std::move(config)), weights(8, 0.0f) {}

  tree state() {
    return tree::dict({{"w", array::borrow(std::span<float>(weights), {8}).value()}});
  }

  // Trains "steps" steps, saving every step and registering each as latest.
  boost::asio::awaitable<result<void>> run() override {
    for (int i = 0; i < 3; ++i) {
      ++step;
      for (auto& w : weights)
        w += 1.0f;
      const std::string suffix = "step_" + std::to_string(step);
      auto h = start_save_tree_and_metadata(suffix, state(), json::object{{"step", step}});
      if (!h) co_return ckpt::fail(std::move(h).error());
      auto s = co_await h.value().staged();
      if (!s) co_return s;
      auto c = co_await h.value().committed();
      if (!c) co_return c;
      auto registration = register_latest(suffix);
      auto r = co_await std::move(registration);
      if (!r) co_return r;
    }
    co_return mark_done();
  }

  boost::asio::awaitable<result<void>> restore_from_path(fs::path rel_path) override {
    auto t = state();
    auto op = get_tree_and_metadata_from_path(rel_path, t);
    auto loaded = co_await std::move(op);
    if (!loaded) co_return ckpt::fail(std::move(loaded).error());
    step = loaded.value().metadata.at("step").as_int64();
    restored_from = rel_path;
    co_return ckpt::success();
  }

  std::vector<float> weights;
  std::int64_t step = 0;
  fs::path restored_from;
};

execution_spec make_spec(const fs::path& root, std::string job_name = "job-a") {
  execution_spec s;
  s.project = "proj";
  s.group = "grp";
  s.job_name = std::move(job_name);
  s.run_id = "run-" + s.job_name;
  s.cluster.checkpoints_dir = root;
  return s;
}

tree small_tree(float base) {
  auto w = array::zeros(dtype::f32, {8}).value();
  auto b = array::zeros(dtype::f32, {3}).value();
  for (std::size_t i = 0; i < 8; ++i)
    w.as_mutable<float>()[i] = base + static_cast<float>(i);
  for (std::size_t i = 0; i < 3; ++i)
    b.as_mutable<float>()[i] = -base;
  return tree::dict({{"params", tree::dict({{"w", w}})}, {"opt", tree::dict({{"b", b}})}});
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

template <class T>
T run_coro(boost::asio::awaitable<T> op) {
  return ckpt::detail::run_on_private_context(std::move(op));
}

}  // namespace

TEST_CASE("execution spec: JSON round trip and path resolution", "[job]") {
  auto spec = make_spec("/ckpts/root");
  spec.cluster.host_index = 3;
  spec.cluster.host_count = 4;
  json::value v = json::value_from(spec);
  CHECK(v.at("cluster").at("checkpoints_dir").as_string() == "/ckpts/root");
  CHECK(json::value_to<execution_spec>(v) == spec);
  CHECK(ckpt::spec_from_json(json::parse(R"({"project":"p"})")).error() == errc::invalid_argument);
  CHECK(ckpt::spec_from_json(json::parse(R"([1])")).error() == errc::invalid_argument);

  CHECK(spec.job_dir().value() == fs::path("/ckpts/root/proj/grp/job-a"));
  CHECK(spec.rel_path("step_1").value() == fs::path("proj/grp/job-a/step_1"));
  auto abs = test_job::checkpoint_path(spec, "step_1").value();
  CHECK(abs == fs::path("/ckpts/root/proj/grp/job-a/step_1"));
  CHECK(abs.is_absolute());
  CHECK(spec.resolve("other/g/j/step_2").value() == fs::path("/ckpts/root/other/g/j/step_2"));

  // A relative checkpoints_dir resolves against the current directory.
  auto rel_spec = make_spec("relative/dir");
  CHECK(test_job::checkpoint_path(rel_spec, "s").value() ==
        fs::current_path() / "relative/dir/proj/grp/job-a/s");
}

TEST_CASE("execution spec: paths that escape checkpoints_dir are refused", "[job]") {
  auto spec = make_spec("/ckpts/root");
  for (const char* bad : {"../x", "a/../../b", "a/..", "/etc/passwd", "", ".", "a/../b"}) {
    INFO(bad);
    auto r = spec.resolve(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::path_escape);
  }
  CHECK(spec.rel_path("..").error() == errc::path_escape);
  CHECK(test_job::checkpoint_path(spec, "/abs").error() == errc::path_escape);
  CHECK(test_job::checkpoint_path(spec, "../job-b/step_1").error() == errc::path_escape);
  // Hidden names are ckpt's temporary namespace.
  CHECK(spec.rel_path(".step_1.tmp-1-a").error() == errc::invalid_argument);
  // Bad spec parts are bad fields, as job.hpp documents (issue 16 #6: they were path_escape).
  auto bad = spec;
  bad.job_name = "..";
  CHECK(bad.job_dir().error() == errc::invalid_argument);
  bad.job_name = "a/b";
  CHECK(bad.job_dir().error() == errc::invalid_argument);
  bad = spec;
  bad.project = "a/b";
  CHECK(bad.job_dir().error() == errc::invalid_argument);
  bad.job_name = "";
  CHECK(bad.job_dir().error() == errc::invalid_argument);
  bad = spec;
  bad.cluster.checkpoints_dir.clear();
  CHECK(bad.job_dir().error() == errc::invalid_argument);
  CHECK_FALSE(test_job(bad, {}).done());
}

TEST_CASE("natural order of checkpoint names", "[job]") {
  using ckpt::store::natural_less;
  CHECK(natural_less("step_9", "step_10"));
  CHECK_FALSE(natural_less("step_10", "step_9"));
  CHECK(natural_less("step_2", "step_10"));
  CHECK(natural_less("a", "b"));
  CHECK(natural_less("step", "step_1"));
  CHECK(natural_less("step_1", "step_1a"));
  CHECK(natural_less("step_1", "step_01"));  // same value: fewer leading zeros first
  CHECK_FALSE(natural_less("step_1", "step_1"));
  CHECK(natural_less("v1.9.3", "v1.10.0"));
  CHECK(natural_less("step_99999999999999999999", "step_100000000000000000000"));
  std::vector<std::string> names{"step_10", "step_9", "step_100", "final", "step_1", "step_09"};
  std::sort(names.begin(), names.end(), [](auto& a, auto& b) { return natural_less(a, b); });
  CHECK(names ==
        std::vector<std::string>{"final", "step_1", "step_9", "step_09", "step_10", "step_100"});
}

TEST_CASE("JSON merge patch (RFC 7386)", "[job]") {
  auto mp = [](const char* t, const char* p) {
    return ckpt::json_merge_patch(json::parse(t), json::parse(p));
  };
  CHECK(mp(R"({"a":"b"})", R"({"a":"c"})") == json::parse(R"({"a":"c"})"));
  CHECK(mp(R"({"a":"b"})", R"({"b":"c"})") == json::parse(R"({"a":"b","b":"c"})"));
  CHECK(mp(R"({"a":"b"})", R"({"a":null})") == json::parse(R"({})"));
  CHECK(mp(R"({"a":"b","b":"c"})", R"({"a":null})") == json::parse(R"({"b":"c"})"));
  CHECK(mp(R"({"a":["b"]})", R"({"a":"c"})") == json::parse(R"({"a":"c"})"));
  CHECK(mp(R"({"a":"c"})", R"({"a":["b"]})") == json::parse(R"({"a":["b"]})"));
  CHECK(mp(R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})") ==
        json::parse(R"({"a":{"b":"d"}})"));
  CHECK(mp(R"({"a":[{"b":"c"}]})", R"({"a":[1]})") == json::parse(R"({"a":[1]})"));
  CHECK(mp(R"(["a","b"])", R"(["c","d"])") == json::parse(R"(["c","d"])"));
  CHECK(mp(R"({"a":"b"})", R"(["c"])") == json::parse(R"(["c"])"));
  CHECK(mp(R"({"a":"foo"})", R"(null)") == json::parse(R"(null)"));
  CHECK(mp(R"({"a":"foo"})", R"("bar")") == json::parse(R"("bar")"));
  CHECK(mp(R"({"e":null})", R"({"a":1})") == json::parse(R"({"e":null,"a":1})"));
  CHECK(mp(R"([1,2])", R"({"a":"b","c":null})") == json::parse(R"({"a":"b"})"));
  CHECK(mp(R"({})", R"({"a":{"bb":{"ccc":null}}})") == json::parse(R"({"a":{"bb":{}}})"));
}

TEST_CASE("done() and mark_done()", "[job]") {
  ckpt::test::temp_dir dir;
  test_job job(make_spec(dir.path()), {});
  CHECK_FALSE(job.done());
  REQUIRE(job.mark_done());
  CHECK(job.done());
  CHECK(fs::is_regular_file(dir.path() / "proj/grp/job-a/DONE"));
  CHECK_FALSE(fs::exists(dir.path() / "proj/grp/job-a/DONE.tmp"));
  // Another object of the same job sees it; another job does not.
  CHECK(test_job(make_spec(dir.path()), {}).done());
  CHECK_FALSE(test_job(make_spec(dir.path(), "job-b"), {}).done());
}

TEST_CASE("stale temporary and trash directories: only ours are removed", "[job]") {
  ckpt::test::temp_dir dir;
  test_job job(make_spec(dir.path()), {});
  const fs::path jd = job.job_dir().value();
  // Nothing there yet: not an error.
  CHECK(job.cleanup_stale().value().removed.empty());
  fs::create_directories(jd);
  const std::string own = std::to_string(::getpid());
  for (const char* d : {".step_1.tmp-123-abcd1234", ".step_2.trash-77-ff00aa11", "step_3",
                        ".hidden", ".step_4.tmp-", ".x.tmp-abc", ".x.tmp-12-", "..tmp-1-a",
                        "notes.tmp-1-a", "keep.trash-1-a"}) {
    fs::create_directories(jd / d / "inside");
  }
  fs::create_directories(jd / (".step_5.tmp-" + own + "-deadbeef"));  // a save of ours in flight
  write_file(jd / "LATEST.tmp", "step_1\n");
  write_file(jd / "DONE.tmp", "x");
  // A file named like a temporary directory: a differential save's hard-link probe a crash
  // left (removed); one of our own process is left alone, like our directories.
  write_file(jd / ".step_6.tmp-5-aa", "a probe link left by a crash");
  write_file(jd / (".step_8.tmp-" + own + "-cc"), "our own probe");
  fs::create_directory_symlink(jd / "step_3", jd / ".step_7.tmp-9-bb");

  auto report = job.cleanup_stale().value();
  CHECK(report.removed == std::vector<std::string>{".step_1.tmp-123-abcd1234",
                                                   ".step_2.trash-77-ff00aa11", ".step_6.tmp-5-aa",
                                                   "DONE.tmp", "LATEST.tmp"});
  std::vector<std::string> left;
  for (auto& e : fs::directory_iterator(jd))
    left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"..tmp-1-a", ".hidden", ".step_4.tmp-",
                                         ".step_5.tmp-" + own + "-deadbeef", ".step_7.tmp-9-bb",
                                         ".step_8.tmp-" + own + "-cc", ".x.tmp-12-", ".x.tmp-abc",
                                         "keep.trash-1-a", "notes.tmp-1-a", "step_3"});
  CHECK(fs::exists(jd / "step_3" / "inside"));  // the symlink was not followed
}

TEST_CASE("save and load through a job - own and other jobs' checkpoints - partial - metadata only",
          "[job]") {
  ckpt::test::temp_dir dir;
  test_job a(make_spec(dir.path(), "job-a"), test_config{8, 0.5, "a", {}});
  test_job b(make_spec(dir.path(), "job-b"), test_config{16, 0.25, "b", {}});

  const tree ta = small_tree(1.0f);
  auto stats = a.save_tree_and_metadata_blocking("step_1", ta, json::object{{"step", 1}});
  REQUIRE(stats);
  CHECK(stats.value().leaves == 2);
  CHECK(fs::is_directory(dir.path() / "proj/grp/job-a/step_1"));

  // job.json holds the saving job's spec and config.
  auto job_json = ckpt::load_job_blocking(dir.path() / "proj/grp/job-a/step_1").value();
  CHECK(json::value_to<execution_spec>(job_json.at("spec")) == a.spec());
  CHECK(job_json.at("config").at("hidden").as_int64() == 8);
  CHECK(job_json.at("config").at("name").as_string() == "a");

  // Own checkpoint, blocking and async.
  tree tmpl = small_tree(0.0f);
  auto own = a.get_tree_and_metadata_blocking("step_1", tmpl).value();
  CHECK(own.tree == ta);
  CHECK(own.metadata.at("step").as_int64() == 1);
  auto own_async = run_coro(a.get_tree_and_metadata("step_1", tmpl)).value();
  CHECK(own_async.tree == ta);

  // Another job's checkpoint by rel_path.
  auto other = b.get_tree_and_metadata_from_path_blocking("proj/grp/job-a/step_1", tmpl).value();
  CHECK(other.tree == ta);
  auto other_async = run_coro(b.get_tree_and_metadata_from_path("proj/grp/job-a/step_1", tmpl));
  CHECK(other_async.value().tree == ta);
  // b's own "step_1" does not exist.
  CHECK_FALSE(b.get_tree_and_metadata_blocking("step_1", tmpl));

  // Partial: an "inference" template with only params (plus a leaf the checkpoint lacks).
  auto wspec = array::spec(dtype::f32, {8}).value();
  tree infer = tree::dict(
      {{"params", tree::dict({{"w", wspec}})}, {"extra", array::spec(dtype::f32, {2}).value()}});
  CHECK_FALSE(a.get_tree_and_metadata_blocking("step_1", infer));  // strict mode refuses
  auto partial = a.get_tree_and_metadata_blocking("step_1", infer, true).value();
  const tree* w = partial.tree.find("params/w");
  REQUIRE(w);
  CHECK(w->leaf() == ta.find("params/w")->leaf());
  CHECK(partial.tree.find("opt") == nullptr);
  auto partial_async =
      run_coro(b.get_tree_and_metadata_from_path("proj/grp/job-a/step_1", infer, true));
  CHECK(partial_async.value().tree.find("params/w")->leaf() == ta.find("params/w")->leaf());

  // Metadata only.
  CHECK(a.get_metadata_blocking("step_1").value().at("step").as_int64() == 1);
  CHECK(run_coro(a.get_metadata("step_1")).value().at("step").as_int64() == 1);
  CHECK(b.get_metadata_from_path_blocking("proj/grp/job-a/step_1").value().at("step") == 1);
  CHECK(run_coro(b.get_metadata_from_path("proj/grp/job-a/step_1")).value().at("step") == 1);

  // b saves into a's directory by rel_path (its own job.json), async.
  auto saved = run_coro(
      b.save_tree_and_metadata_from_path("proj/grp/job-a/from_b", ta, json::object{{"by", "b"}}));
  REQUIRE(saved);
  auto by_b = ckpt::load_job_blocking(dir.path() / "proj/grp/job-a/from_b").value();
  CHECK(by_b.at("spec").at("job_name").as_string() == "job-b");
  CHECK(run_coro(b.save_tree_and_metadata("step_5", ta, {})));
  CHECK(fs::is_directory(dir.path() / "proj/grp/job-b/step_5"));

  // Escaping paths are refused before any IO.
  CHECK(a.start_save_tree_and_metadata_from_path("../outside", ta, {}).error() ==
        errc::path_escape);
  CHECK(a.save_tree_and_metadata_blocking("../x", ta, {}).error() == errc::path_escape);
  CHECK(run_coro(a.get_metadata_from_path("/etc")).error() == errc::path_escape);
  CHECK(a.get_tree_and_metadata_from_path_blocking("a/../../x", tmpl).error() == errc::path_escape);
  CHECK_FALSE(fs::exists(dir.path().parent_path() / "outside"));
}

TEST_CASE("async save handle through a job", "[job]") {
  ckpt::test::temp_dir dir;
  test_job job(make_spec(dir.path()), {});
  std::vector<float> w(1 << 16, 1.0f);
  tree t = tree::dict({{"w", array::borrow(std::span<float>(w), {1 << 16}).value()}});
  auto h = job.start_save_tree_and_metadata("step_1", t, json::object{{"step", 1}}).value();
  REQUIRE(h.wait_staged());
  std::fill(w.begin(), w.end(), 2.0f);  // allowed after staged
  REQUIRE(h.wait_committed());
  CHECK(h.path() == test_job::checkpoint_path(job.spec(), "step_1").value());
  auto back = job.get_tree_and_metadata_blocking("step_1", t).value();
  CHECK(back.tree.find("w")->leaf().as<float>()[0] == 1.0f);
}

TEST_CASE("register_latest - latest - checkpoints", "[job]") {
  ckpt::test::temp_dir dir;
  const auto spec = make_spec(dir.path());
  test_job job(spec, {});
  const fs::path jd = job.job_dir().value();
  // The awaitable forms, each awaited from a coroutine on an io_context of its own; the blocking
  // forms must agree with them.
  auto latest = [&] {
    auto awaited = run_coro(test_job::latest(spec));
    auto blocking = test_job::latest_blocking(spec);
    CHECK(awaited.has_value() == blocking.has_value());
    if (awaited && blocking) CHECK(awaited.value() == blocking.value());
    if (!awaited && !blocking) CHECK(awaited.error().what() == blocking.error().what());
    return awaited;
  };
  auto checkpoints = [&] {
    auto awaited = run_coro(test_job::checkpoints(spec));
    auto blocking = test_job::checkpoints_blocking(spec);
    REQUIRE(awaited);
    REQUIRE(blocking);
    CHECK(awaited.value() == blocking.value());
    return awaited;
  };
  auto register_latest = [&](const char* suffix) { return run_coro(job.register_latest(suffix)); };

  CHECK(latest().value() == std::nullopt);
  CHECK(checkpoints().value().empty());  // no job directory yet

  const tree t = small_tree(2.0f);
  for (int step : {10, 9, 2, 100}) {
    REQUIRE(job.save_tree_and_metadata_blocking("step_" + std::to_string(step), t,
                                                json::object{{"step", step}}));
  }
  // Not checkpoints: an uncommitted directory, our temporary/trash names, files.
  fs::create_directories(jd / "step_11");
  write_file(jd / "step_11" / "data-00000.bin", "partial");
  fs::create_directories(jd / ".step_12.tmp-1-abcd");
  fs::rename(jd / "step_100", jd / ".step_100.trash-1-ab");  // committed, but trash
  write_file(jd / "notes.txt", "x");

  CHECK(checkpoints().value() == std::vector<std::string>{"step_2", "step_9", "step_10"});

  // Only committed checkpoints can be registered.
  CHECK(register_latest("step_11").error() == errc::not_committed);
  CHECK(register_latest("step_12").error() == errc::not_found);
  CHECK(register_latest("../x").error() == errc::path_escape);
  CHECK(latest().value() == std::nullopt);

  REQUIRE(register_latest("step_9"));
  CHECK(latest().value() == std::optional<std::string>("step_9"));
  REQUIRE(job.register_latest_blocking("step_10"));
  CHECK(latest().value() == std::optional<std::string>("step_10"));
  CHECK_FALSE(fs::exists(jd / "LATEST.tmp"));

  // A LATEST naming a missing or uncommitted checkpoint is an error, not a fallback.
  write_file(jd / "LATEST", "step_99\n");
  CHECK(latest().error() == errc::not_found);
  write_file(jd / "LATEST", "step_11\n");
  CHECK(latest().error() == errc::not_committed);
  write_file(jd / "LATEST", "../../x\n");
  CHECK(latest().error() == errc::path_escape);
  write_file(jd / "LATEST", "\n");
  CHECK(latest().error() == errc::corrupt);
}

TEST_CASE("run() - restore - from_checkpoint with and without resume", "[job]") {
  ckpt::test::temp_dir dir;
  auto spec = make_spec(dir.path());
  {
    test_job job(spec, test_config{8, 0.5, "orig", json::object{{"keep", 1}, {"drop", 2}}});
    REQUIRE(job.run_blocking());
    CHECK(job.done());
  }
  CHECK(test_job::latest_blocking(spec).value() == std::optional<std::string>("step_3"));
  CHECK(test_job::checkpoints_blocking(spec).value() ==
        std::vector<std::string>{"step_1", "step_2", "step_3"});

  // restore / restore_from_path on a fresh job.
  {
    test_job job(spec, {});
    REQUIRE(run_coro(job.restore("step_2")));
    CHECK(job.step == 2);
    CHECK(job.weights[0] == 2.0f);
    CHECK(job.restored_from == fs::path("proj/grp/job-a/step_2"));
  }

  // Overlay: replace lr, add extra.new, delete extra.drop (null).
  const json::value overlay =
      json::parse(R"({"lr": 0.125, "extra": {"new": "yes", "drop": null}})");

  // resume = true: the saved identity (run_id included) comes back; the cluster stays ours.
  auto caller = make_spec(dir.path());
  caller.run_id = "a-new-run";
  caller.cluster.host_index = 1;
  caller.cluster.host_count = 2;
  {
    auto latest = test_job::latest_blocking(spec).value().value();
    auto [job, cfg] =
        test_job::from_checkpoint_blocking<test_job>(latest, caller, overlay, true).value();
    CHECK(job->spec().run_id == "run-job-a");
    CHECK(job->spec().cluster == caller.cluster);
    CHECK(job->step == 3);
    CHECK(job->weights[7] == 3.0f);
    CHECK(cfg.hidden == 8);
    CHECK(cfg.lr == 0.125);
    CHECK(cfg.name == "orig");
    CHECK(cfg.extra == json::object{{"keep", 1}, {"new", "yes"}});
    CHECK(job->config().lr == 0.125);
  }
  // resume = false: the caller's identity as passed; another job restores job-a's weights.
  {
    auto other = make_spec(dir.path(), "finetune");
    other.run_id = "ft-run";
    auto r = run_coro(
        test_job::from_checkpoint_path<test_job>("proj/grp/job-a/step_1", other, nullptr, false));
    REQUIRE(r);
    auto& [job, cfg] = r.value();
    CHECK(job->spec() == other);
    CHECK(job->step == 1);
    CHECK(cfg.extra == json::object{{"keep", 1}, {"drop", 2}});  // no overlay
    CHECK_FALSE(job->done());
  }
  // Async from_checkpoint (own suffix) and errors.
  {
    auto r = run_coro(test_job::from_checkpoint<test_job>("step_2", caller));
    REQUIRE(r);
    CHECK(r.value().first->spec() == caller);
    CHECK(r.value().first->step == 2);
    CHECK(test_job::from_checkpoint_blocking<test_job>("step_404", caller).error() ==
          errc::not_found);
    CHECK(test_job::from_checkpoint_blocking<test_job>("../x", caller).error() ==
          errc::path_escape);
    // An overlay that no longer converts to the config type.
    CHECK(test_job::from_checkpoint_blocking<test_job>("step_2", caller,
                                                       json::parse(R"({"hidden": "wide"})"))
              .error() == errc::invalid_argument);
  }
}

namespace {
// test_config one release later: one more field.
struct test_config_v2 {
  int hidden = 4;
  double lr = 0.1;
  std::string name = "base";
  json::object extra;
  int warmup = 7;
};
BOOST_DESCRIBE_STRUCT(test_config_v2, (), (hidden, lr, name, extra, warmup))

class test_job_v2 : public ckpt::restoreable_job<test_config_v2> {
 public:
  test_job_v2(execution_spec spec, test_config_v2 config)
      : restoreable_job(std::move(spec), std::move(config)), weights(8, 0.0f) {}
  boost::asio::awaitable<result<void>> run() override { co_return ckpt::success(); }
  boost::asio::awaitable<result<void>> restore_from_path(fs::path rel_path) override {
    auto t = tree::dict({{"w", array::borrow(std::span<float>(weights), {8}).value()}});
    auto op = get_tree_and_metadata_from_path(rel_path, t);
    auto loaded = co_await std::move(op);
    if (!loaded) co_return ckpt::fail(std::move(loaded).error());
    co_return ckpt::success();
  }
  std::vector<float> weights;
};
}  // namespace

TEST_CASE("configs evolve: a new field takes its default, an overlay deletes, typos are named",
          "[job][config]") {
  ckpt::test::temp_dir dir;
  auto spec = make_spec(dir.path());
  {
    test_job job(spec, test_config{8, 0.5, "orig", json::object{{"keep", 1}}});
    REQUIRE(job.run_blocking());
  }
  // v2 resumes v1's checkpoint: warmup (new) gets its default; the overlay deletes lr (RFC 7386
  // null), which falls back to v2's default too.
  auto r = test_job_v2::from_checkpoint_blocking<test_job_v2>("step_3", spec,
                                                              json::parse(R"({"lr": null})"), true);
  REQUIRE(r);
  const auto& cfg = r.value().second;
  CHECK(cfg.hidden == 8);
  CHECK(cfg.name == "orig");
  CHECK(cfg.warmup == 7);
  CHECK(cfg.lr == 0.1);
  CHECK(cfg.extra == json::object{{"keep", 1}});
  CHECK(r.value().first->weights[0] == 3.0f);
  // An overlay key the config type lacks is named.
  auto typo = test_job_v2::from_checkpoint_blocking<test_job_v2>(
      "step_3", spec, json::parse(R"({"hiden": 16})"), true);
  REQUIRE_FALSE(typo);
  CHECK(typo.error() == errc::invalid_argument);
  CHECK_THAT(typo.error().message(), Catch::Contains("unknown field \"hiden\""));
  CHECK_THAT(typo.error().message(), Catch::Contains("hidden, lr, name, extra, warmup"));
}

TEST_CASE("save_and_register: one call saves, registers LATEST and starts retention", "[job]") {
  ckpt::test::temp_dir dir;
  auto spec = make_spec(dir.path());
  test_job job(spec, {});
  job.set_retention({2, 0});
  const tree t = job.state();  // what test_job restores
  for (int step = 1; step <= 3; ++step) {
    const std::string suffix = "step_" + std::to_string(step);
    auto s = job.save_and_register_blocking(suffix, t, json::object{{"step", step}});
    REQUIRE(s);
    CHECK(s.value().logical_bytes > 0);
    CHECK(test_job::latest_blocking(spec).value() == std::optional<std::string>(suffix));
  }
  REQUIRE(job.wait_retention());
  CHECK(test_job::checkpoints_blocking(spec).value() ==
        std::vector<std::string>{"step_2", "step_3"});
  // Awaitable, and the overlapping form: staged, then commit_and_register.
  REQUIRE(run_coro(job.save_and_register("step_4", t, json::object{{"step", 4}})));
  auto h = job.start_save_tree_and_metadata("step_5", t, json::object{{"step", 5}});
  REQUIRE(h);
  REQUIRE(h.value().wait_staged());
  REQUIRE(run_coro(job.commit_and_register(h.value(), "step_5")));
  CHECK(test_job::latest_blocking(spec).value() == std::optional<std::string>("step_5"));
  // A failed save registers nothing.
  auto again = job.save_and_register_blocking("step_5", t, {});
  CHECK(again.error() == errc::already_exists);
  CHECK(test_job::latest_blocking(spec).value() == std::optional<std::string>("step_5"));
  // job_from_checkpoint names the job type once.
  REQUIRE(job.wait_retention());
  auto restored = ckpt::job_from_checkpoint_blocking<test_job>("step_5", spec);
  INFO((restored ? std::string("ok") : restored.error().message()));
  REQUIRE(restored);
  CHECK(restored.value().first->restored_from == fs::path("proj/grp/job-a/step_5"));
  CHECK(restored.value().first->step == 5);
}

TEST_CASE("job.json comes with a job's load and has an awaitable reader", "[job]") {
  ckpt::test::temp_dir dir;
  auto spec = make_spec(dir.path());
  test_job job(spec, test_config{16, 0.5, "j", {}});
  const tree t = job.state();
  REQUIRE(job.save_tree_and_metadata_blocking("step_1", t, {}));
  auto got = job.get_tree_and_metadata_blocking("step_1", t);
  REQUIRE(got);
  REQUIRE(got.value().job);
  CHECK(got.value().job->at("config").at("hidden").as_int64() == 16);
  CHECK(got.value().job->at("spec").at("job_name").as_string() == "job-a");
  const auto path = job.job_dir().value() / "step_1";
  auto j = run_coro(ckpt::load_job(path));
  REQUIRE(j);
  CHECK(j.value() == *got.value().job);
  REQUIRE(ckpt::save_blocking(dir / "plain", t, {}));
  CHECK(run_coro(ckpt::load_job(dir / "plain")).error() == errc::not_found);
}

TEST_CASE("job errors name the checkpoint path once", "[job]") {
  ckpt::test::temp_dir dir;
  auto spec = make_spec(dir.path());
  test_job job(spec, {});
  REQUIRE(job.save_tree_and_metadata_blocking("step_1", small_tree(1.0f), {}));
  const tree wrong = tree::dict({{"other", array::zeros(dtype::f32, {2}).value()}});
  auto r = job.get_tree_and_metadata_blocking("step_1", wrong);
  REQUIRE_FALSE(r);
  const std::string msg = r.error().message();
  const std::string p = job.job_dir().value().string() + "/step_1";
  INFO(msg);
  const auto first = msg.find(p);
  REQUIRE(first != std::string::npos);
  CHECK(msg.find(p + ":", first + p.size()) == std::string::npos);
  CHECK(msg.rfind("load: ", 0) == 0);
}

TEST_CASE("retention keeps the last N and every K-th but never LATEST's target", "[job]") {
  ckpt::test::temp_dir dir;
  auto spec = make_spec(dir.path());
  test_job job(spec, {});
  const fs::path jd = job.job_dir().value();
  const tree t = small_tree(3.0f);
  for (int step = 1; step <= 8; ++step) {
    REQUIRE(job.save_tree_and_metadata_blocking("step_" + std::to_string(step), t, {}));
  }
  fs::create_directories(jd / "step_0");  // uncommitted: never touched by retention

  // No rules: nothing deleted.
  CHECK(ckpt::store::apply_retention(jd, {}).value().removed.empty());

  // LATEST points at an old checkpoint: it survives keep_last.
  REQUIRE(job.register_latest_blocking("step_2"));
  auto report = ckpt::store::apply_retention(jd, {.keep_last = 2, .keep_every = 3}).value();
  CHECK(report.removed == std::vector<std::string>{"step_1", "step_4", "step_5"});
  CHECK(report.kept == std::vector<std::string>{"step_2", "step_3", "step_6", "step_7", "step_8"});
  CHECK(test_job::checkpoints_blocking(spec).value() == report.kept);
  CHECK(fs::is_directory(jd / "step_0"));
  CHECK(test_job::latest_blocking(spec).value() == std::optional<std::string>("step_2"));
  for (auto& e : fs::directory_iterator(jd))  // no trash left behind
    CHECK(e.path().filename().string().find(".trash-") == std::string::npos);

  // Through register_latest on the background thread.
  job.set_retention({.keep_last = 1});
  REQUIRE(job.register_latest_blocking("step_7"));
  auto bg = job.wait_retention().value();
  // step_8 is the newest (keep_last = 1), step_7 is LATEST's target.
  CHECK(bg.removed == std::vector<std::string>{"step_2", "step_3", "step_6"});
  CHECK(test_job::checkpoints_blocking(spec).value() ==
        std::vector<std::string>{"step_7", "step_8"});
  CHECK(test_job::latest_blocking(spec).value() == std::optional<std::string>("step_7"));

  // An unreadable LATEST stops retention from deleting anything.
  write_file(jd / "LATEST", "step_404\n");
  CHECK_FALSE(ckpt::store::apply_retention(jd, {.keep_last = 1}));
  CHECK(test_job::checkpoints_blocking(spec).value() ==
        std::vector<std::string>{"step_7", "step_8"});
}
