// ckpt-torch-train: a libtorch training loop that checkpoints while it trains and resumes
// bit-identically after a kill.
//
// The idea is ckpt-train's, with a real framework: every K steps the loop starts a save of the
// whole training state and co_awaits only `staged` (the parameters and AdamW moments are
// borrowed views of the tensors, captured by a memcpy); training goes on while the checkpoint is
// written, and the loop waits for `committed` (then registers LATEST) just before the next save.
// Killed at any moment, the next run restores from LATEST: the module's tensors in place, the
// optimizer's per-parameter state and step counts, the default CPU generator (dropout and the
// synthetic batches come from it) and the step, and ends with the very parameters of an
// uninterrupted run (the last line prints their XXH3-64).
//
// The model: Linear -> LayerNorm -> GELU -> Dropout, twice, then Linear (in 256, hidden 1536,
// out 256: 3.2 M parameters, 36 MiB of state with AdamW), regressing a fixed random teacher
// tanh(x T) on Gaussian inputs, trained with AdamW on one intra-op thread, deterministic from the
// seed.
//
//   ckpt-torch-train --dir DIR [--steps N] [--ckpt-every K] [--keep N] [--hidden H] [--batch B]
#include <ckpt/job.hpp>
#include <ckpt/torch.hpp>

#include <torch/torch.h>
#include <xxhash.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/describe/class.hpp>
#include <boost/json/serialize.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using ckpt::result;

/// Everything that defines the run; saved in every checkpoint's job.json.
struct torch_train_config {
  std::int64_t in = 256;
  std::int64_t hidden = 1536;
  std::int64_t out = 256;
  std::int64_t batch = 16;
  double dropout = 0.1;
  double lr = 1e-3;
  double weight_decay = 1e-2;
  std::uint64_t seed = 42;
  std::int64_t steps = 300;
  std::int64_t ckpt_every = 10;
  std::int64_t keep = 3;  ///< retention: keep the last N checkpoints (0: keep all)
};
BOOST_DESCRIBE_STRUCT(torch_train_config, (),
                      (in, hidden, out, batch, dropout, lr, weight_decay, seed, steps, ckpt_every,
                       keep))

namespace {

using clock_type = std::chrono::steady_clock;
double ms_since(clock_type::time_point t) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}

struct mlp_impl : torch::nn::Module {
  explicit mlp_impl(const torch_train_config& c) {
    using namespace torch::nn;
    body = register_module(
        "body", Sequential(Linear(c.in, c.hidden), LayerNorm(LayerNormOptions({c.hidden})), GELU(),
                           Dropout(c.dropout), Linear(c.hidden, c.hidden),
                           LayerNorm(LayerNormOptions({c.hidden})), GELU(), Dropout(c.dropout),
                           Linear(c.hidden, c.out)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return body->forward(x); }
  torch::nn::Sequential body{nullptr};
};
TORCH_MODULE_IMPL(mlp, mlp_impl);

class torch_train_job : public ckpt::restoreable_job<torch_train_config> {
 public:
  torch_train_job(ckpt::execution_spec spec, torch_train_config config)
      : restoreable_job(std::move(spec), std::move(config)),
        teacher_(make_teacher(config_)),
        model_(seeded_model(config_)),
        opt_(model_->parameters(),
             torch::optim::AdamWOptions(config_.lr).weight_decay(config_.weight_decay)) {
    model_->train();
    // A resumed run may rewrite a checkpoint that a killed run committed but never registered
    // as LATEST: the step is deterministic, so replacing it is safe.
    save_defaults().overwrite = true;
    set_retention({.keep_last = static_cast<std::size_t>(std::max<std::int64_t>(config_.keep, 0))});
  }

  std::int64_t step() const { return step_; }

  /// The checkpointed state: model and optimizer tensors borrowed (captured before `staged`),
  /// the generator's state and the step.
  result<ckpt::tree> state_tree() {
    CKPT_TRY(auto model, ckpt::torch::module_tree(*model_));
    CKPT_TRY(auto optim, ckpt::torch::optimizer_tree(opt_, *model_));
    CKPT_TRY(auto rng, ckpt::torch::generator_state());
    CKPT_TRY(auto step, ckpt::array::borrow(std::span<std::int64_t>(&step_, 1), {}));
    return ckpt::tree::dict(
        {{"model", std::move(model)}, {"optim", std::move(optim)}, {"rng", rng}, {"step", step}});
  }

  asio::awaitable<result<void>> restore_from_path(fs::path rel_path) override {
    auto path = spec().resolve(rel_path);
    if (!path) co_return ckpt::fail(std::move(path).error());
    auto op = ckpt::load(path.value(), nullptr, load_defaults());
    auto loaded = co_await std::move(op);
    if (!loaded) co_return ckpt::fail(std::move(loaded).error());
    co_return restore_state(loaded.value().tree);
  }

  /// The training loop: one async save in flight at a time, overlapped with training.
  asio::awaitable<result<void>> run() override {
    const auto& c = config_;
    std::optional<ckpt::save_handle> pending;
    std::string pending_suffix;
    auto finish_pending = [&]() -> asio::awaitable<result<void>> {
      if (!pending) co_return ckpt::success();
      // Durable, then registered as LATEST (retention runs in the background).
      auto registered = co_await commit_and_register(*pending, pending_suffix);
      if (!registered) co_return ckpt::fail(std::move(registered).error());
      const auto st = registered.value();
      std::printf("ckpt %s committed: staged %.1f ms, committed %.1f ms, %.1f MiB -> %.1f MiB\n",
                  pending_suffix.c_str(), st.staged_s * 1e3, st.committed_s * 1e3,
                  static_cast<double>(st.logical_bytes) / (1 << 20),
                  static_cast<double>(st.stored_bytes) / (1 << 20));
      std::fflush(stdout);
      pending.reset();
      co_return ckpt::success();
    };

    double window_ms = 0;
    std::int64_t window_steps = 0;
    while (step_ < c.steps) {
      const auto t0 = clock_type::now();
      const float loss = train_step();
      window_ms += ms_since(t0);
      ++window_steps;
      if (step_ % c.ckpt_every == 0 || step_ == c.steps) {
        std::printf("step %lld loss %.6f step_time %.2f ms\n", static_cast<long long>(step_),
                    static_cast<double>(loss), window_ms / static_cast<double>(window_steps));
        window_ms = 0;
        window_steps = 0;
        // The previous save had K steps to commit in the background; wait for it now.
        auto prev = co_await finish_pending();
        if (!prev) co_return prev;
        const std::string suffix = "step_" + std::to_string(step_);
        const auto s0 = clock_type::now();
        auto state = state_tree();
        if (!state) co_return ckpt::fail(std::move(state).error());
        auto h = start_save_tree_and_metadata(suffix, state.value(),
                                              json::object{{"step", step_}, {"loss", loss}});
        if (!h) co_return ckpt::fail(std::move(h).error());
        auto staged = co_await h.value().staged();  // from here training may change the tensors
        if (!staged) co_return staged;
        std::printf("ckpt %s staged in %.1f ms (training continues)\n", suffix.c_str(),
                    ms_since(s0));
        std::fflush(stdout);
        pending = std::move(h).value();
        pending_suffix = suffix;
      }
    }
    auto last = co_await finish_pending();
    if (!last) co_return last;
    auto retention = wait_retention();
    if (!retention) std::fprintf(stderr, "retention: %s\n", retention.error().what().c_str());
    co_return mark_done();
  }

  /// XXH3-64 of the parameters' bytes in named_parameters() order.
  std::uint64_t params_hash() const {
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    for (const auto& p : model_->named_parameters()) {
      auto t = p.value().contiguous();
      XXH3_64bits_update(st, t.data_ptr(), static_cast<std::size_t>(t.numel()) * t.element_size());
    }
    const std::uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
  }

 private:
  static torch::Tensor make_teacher(const torch_train_config& c) {
    torch::manual_seed(c.seed ^ 0x7465616368657221ULL);
    return torch::randn({c.in, c.out}) / std::sqrt(static_cast<double>(c.in));
  }
  static mlp seeded_model(const torch_train_config& c) {
    torch::manual_seed(c.seed);  // the model's initialisation, then the data and dropout
    return mlp(c);
  }

  result<void> restore_state(const ckpt::tree& t) {
    const ckpt::tree* model = t.get("model");
    const ckpt::tree* optim = t.get("optim");
    const ckpt::tree* rng = t.get("rng");
    const ckpt::tree* step = t.get("step");
    if (!model || !optim || !rng || !rng->is_leaf() || !step || !step->is_leaf()) {
      return ckpt::fail(ckpt::errc::template_mismatch,
                        "checkpoint lacks model, optim, rng or step");
    }
    CKPT_TRY(ckpt::torch::restore_module(*model_, *model));
    CKPT_TRY(ckpt::torch::restore_optimizer(opt_, *model_, *optim));
    CKPT_TRY(ckpt::torch::set_generator_state(rng->leaf()));
    const auto& s = step->leaf();
    if (s.dtype() != ckpt::dtype::i64 || s.num_elements() != 1) {
      return ckpt::fail(ckpt::errc::template_mismatch, "step: " + s.describe());
    }
    step_ = s.as<std::int64_t>()[0];
    return ckpt::success();
  }

  /// One AdamW step on a fresh batch; returns the batch's loss.
  float train_step() {
    auto x = torch::randn({config_.batch, config_.in});
    auto y = torch::tanh(torch::matmul(x, teacher_));
    opt_.zero_grad();
    auto loss = torch::mse_loss(model_->forward(x), y);
    loss.backward();
    opt_.step();
    ++step_;
    return loss.item<float>();
  }

  torch::Tensor teacher_;
  mlp model_;
  torch::optim::AdamW opt_;
  std::int64_t step_ = 0;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "ckpt-torch-train: %s\nusage: ckpt-torch-train --dir DIR [--steps N] "
               "[--ckpt-every K] [--keep N] [--hidden H] [--batch B] [--lr LR] [--seed S] "
               "[--job NAME]\n",
               msg);
  std::exit(2);
}

// A plain function, not a capturing lambda: the coroutine frame must not outlive its captures.
asio::awaitable<void> run_job(torch_train_job& job, std::optional<result<void>>& out) {
  out.emplace(co_await job.run());
}

int fail_with(const char* what, const ckpt::error& e) {
  std::fprintf(stderr, "ckpt-torch-train: %s: %s\n", what, e.what().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  torch::set_num_threads(1);  // one intra-op thread: deterministic, and cores left for ckpt
  // Before the model exists: its tensors start on pages, so checkpoints write from them and
  // restores read into them without staging copies.
  ckpt::torch::use_page_aligned_tensors();
  fs::path dir;
  std::string job_name = "mlp";
  torch_train_config config;
  json::object overlay;  // flags given on this command line: overlaid on a resumed config
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + flag).c_str());
    const std::string value = argv[++i];
    auto as_int = [&] {
      char* end = nullptr;
      long long v = std::strtoll(value.c_str(), &end, 10);
      if (!end || *end || v < 0) usage(("bad value for " + flag).c_str());
      return static_cast<std::int64_t>(v);
    };
    if (flag == "--dir") {
      dir = value;
    } else if (flag == "--job") {
      job_name = value;
    } else if (flag == "--steps") {
      overlay["steps"] = config.steps = as_int();
    } else if (flag == "--ckpt-every") {
      overlay["ckpt_every"] = config.ckpt_every = std::max<std::int64_t>(1, as_int());
    } else if (flag == "--keep") {
      overlay["keep"] = config.keep = as_int();
    } else if (flag == "--hidden") {
      config.hidden = std::max<std::int64_t>(1, as_int());
    } else if (flag == "--batch") {
      config.batch = std::max<std::int64_t>(1, as_int());
    } else if (flag == "--seed") {
      config.seed = static_cast<std::uint64_t>(as_int());
    } else if (flag == "--lr") {
      config.lr = std::strtod(value.c_str(), nullptr);
    } else {
      usage(("unknown flag " + flag).c_str());
    }
  }
  if (dir.empty()) usage("--dir is required");

  ckpt::execution_spec spec;
  spec.project = "examples";
  spec.group = "torch_train";
  spec.job_name = job_name;
  spec.run_id = "run-" + std::to_string(::getpid()) + "-" +
                std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  spec.cluster.checkpoints_dir = dir;

  // Resume from LATEST when there is one (model part of the config from the checkpoint; steps,
  // ckpt_every and keep from this command line).
  auto latest = torch_train_job::latest_blocking(spec);
  if (!latest) return fail_with("read LATEST", latest.error());
  std::unique_ptr<torch_train_job> job;
  if (latest.value()) {
    const auto t0 = clock_type::now();
    auto restored = torch_train_job::from_checkpoint_blocking<torch_train_job>(
        *latest.value(), spec, json::value(std::move(overlay)), /*resume=*/true);
    if (!restored) return fail_with("resume", restored.error());
    job = std::move(restored.value().first);
    std::printf("resumed from %s at step %lld in %.1f ms (run_id %s)\n", latest.value()->c_str(),
                static_cast<long long>(job->step()), ms_since(t0), job->spec().run_id.c_str());
  } else {
    job = std::make_unique<torch_train_job>(spec, config);
    std::printf("fresh run %s: %s\n", spec.run_id.c_str(),
                json::serialize(json::value_from(config)).c_str());
  }
  if (job->done()) std::printf("job already marked done\n");
  auto cleaned = job->cleanup_stale();
  if (!cleaned) return fail_with("clean up", cleaned.error());
  for (const auto& name : cleaned.value().removed)
    std::printf("removed stale %s\n", name.c_str());
  std::fflush(stdout);

  asio::io_context ctx;
  std::optional<result<void>> outcome;
  asio::co_spawn(ctx, run_job(*job, outcome), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  ctx.run();
  ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  if (!outcome) return fail_with("train", ckpt::error(ckpt::errc::aborted, "run() did not finish"));
  if (!*outcome) return fail_with("train", outcome->error());
  std::printf("params-xxh3 %016llx\n", static_cast<unsigned long long>(job->params_hash()));
  return 0;
}
