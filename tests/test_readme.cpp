// The README's short example, compiled and run as written (keep the two in step): the job-layer
// example (the trainer and the coroutine that resumes or starts it) and the core-API snippet.
#include "run_coro.hpp"
#include "support.hpp"

#include <ckpt/job.hpp>
#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <boost/describe/class.hpp>
#include <catch2/catch.hpp>

#include <memory>

namespace readme {

void train_one_step(std::vector<float>& w) {
  for (auto& x : w)
    x += 1.0f;
}

// --- README: from here as written ---
// clang-format off
struct settings { std::int64_t steps = 100; };  // saved in job.json; may gain fields later
BOOST_DESCRIBE_STRUCT(settings, (), (steps))

struct trainer : ckpt::restoreable_job<settings> {
  using restoreable_job::restoreable_job;
  std::vector<float> w = std::vector<float>(1 << 20);  // your model's memory
  std::int64_t step = 0;
  ckpt::tree state() {  // leaves borrow it: a save reads it, a restore fills it in place
    return ckpt::tree::dict({{"w", ckpt::array::borrow(std::span(w), {1024, 1024}).value()},
                             {"step", ckpt::array::borrow(std::span(&step, 1), {}).value()}});
  }
  boost::asio::awaitable<ckpt::result<void>> restore_from_path(std::filesystem::path p) override {
    auto op = get_tree_and_metadata_from_path(std::move(p), state());  // fills w and step
    auto got = co_await std::move(op);
    if (!got) co_return ckpt::fail(got.error());
    co_return ckpt::success();
  }
  boost::asio::awaitable<ckpt::result<void>> run() override {
    while (step < config().steps) {
      train_one_step(w);
      ++step;
      if (step % 10 != 0) continue;
      // One call: save, wait for the commit, register as LATEST, start retention.
      auto op = save_and_register("step_" + std::to_string(step), state(), {{"step", step}});
      auto saved = co_await std::move(op);
      if (!saved) co_return ckpt::fail(saved.error());
    }
    co_return ckpt::success();
  }
};
// clang-format on
// --- README: up to here ---

struct outcome {
  std::unique_ptr<trainer> job;
  bool resumed = false;
  ckpt::result<void> trained = ckpt::success();
  ckpt::result<std::vector<std::string>> kept = std::vector<std::string>{};
};

boost::asio::awaitable<outcome> resume_or_start(ckpt::execution_spec spec) {
  // --- README: "Inside a coroutine", as written ---
  // clang-format off
  auto latest = (co_await trainer::latest(spec)).value();
  auto job = std::make_unique<trainer>(spec, settings{});
  if (latest) job = (co_await ckpt::job_from_checkpoint<trainer>(*latest, spec)).value().first;
  auto trained = co_await job->run();               // a result<void>, like every call here
  auto kept = co_await trainer::checkpoints(spec);  // step_10 ... step_100, committed only
  // clang-format on
  // --- README: up to here ---
  co_return outcome{std::move(job), latest.has_value(), std::move(trained), std::move(kept)};
}

boost::asio::awaitable<bool> core_snippet(std::string dir) {
  std::vector<float> w(1 << 20);
  ckpt::tree state =
      ckpt::tree::dict({{"w", ckpt::array::borrow(std::span(w), {1024, 1024}).value()},
                        {"step", ckpt::array::zeros(ckpt::dtype::i64, {}).value()}});
  auto train_more_steps = [&] { train_one_step(w); };
  // --- README: the core-API snippet, as written but for the path (a temporary directory) ---
  // clang-format off
  const std::string path = dir + "/run1/step_100";
  auto h = ckpt::start_save(path, state, {{"step", 100}});
  auto staged = co_await h.staged();  // every byte captured: the leaves may change from here on
  train_more_steps();                 // the checkpoint is written meanwhile
  auto committed = co_await h.committed();       // durable and visible
  auto got = co_await ckpt::load(path, &state);  // into the same memory (zero copy)
  // clang-format on
  // --- README: up to here ---
  co_return staged&& committed&& got&& w[0] == 0.0f &&
      got.value().metadata.at("step").as_int64() == 100 &&
      got.value().tree.find("w")->leaf().bytes().data() == reinterpret_cast<std::byte*>(w.data());
}

}  // namespace readme

TEST_CASE("the README example works as written (a fresh run and a resume)", "[readme]") {
  ckpt::test::temp_dir dir;
  ckpt::execution_spec spec;
  spec.project = "demo";
  spec.group = "readme";
  spec.job_name = "run1";
  spec.run_id = "r1";
  spec.cluster.checkpoints_dir = dir.path();
  std::vector<std::string> all;
  for (int s = 10; s <= 100; s += 10)
    all.push_back("step_" + std::to_string(s));

  auto first = ckpt::test::run(readme::resume_or_start(spec));
  REQUIRE(first.trained);
  CHECK_FALSE(first.resumed);
  CHECK(first.job->step == 100);
  REQUIRE(first.kept);
  CHECK(first.kept.value() == all);
  CHECK(readme::trainer::latest_blocking(spec).value() == std::optional<std::string>("step_100"));

  // A second process: LATEST names step_100, the job resumes there (w and step restored in
  // place) and has nothing left to train.
  auto second = ckpt::test::run(readme::resume_or_start(spec));
  REQUIRE(second.trained);
  CHECK(second.resumed);
  CHECK(second.job->step == 100);
  CHECK(second.job->w.front() == 100.0f);
  CHECK(second.job->w.back() == 100.0f);
  REQUIRE(second.kept);
  CHECK(second.kept.value() == all);
}

TEST_CASE("the README core-API snippet works as written", "[readme]") {
  ckpt::test::temp_dir dir;
  CHECK(ckpt::test::run(readme::core_snippet(dir.path())));
}
