// ckpt-train: a training loop that checkpoints asynchronously and resumes bit-identically.
//
// The idea: a save has two milestones. `staged` comes once the library has captured every byte
// of the state (a memcpy's worth of time); from then on the loop keeps training while the
// checkpoint is compressed, written and fsynced in the background. Before the next save (and
// at the end) the loop waits for `committed`, then registers the checkpoint as LATEST. A
// process killed at any moment restarts from LATEST: parameters, Adam moments, the step and the
// data iterator's PRNG state come back, so the resumed run ends with the very same parameters
// as an uninterrupted one (the last line prints their XXH3-64).
//
// The model: a 2-layer MLP (in -> hidden ReLU -> out) regressing a fixed random "teacher"
// tanh(x T) on synthetic inputs, trained with Adam; single-threaded float math in a fixed
// order, so runs are deterministic. Default size: 3.1 M parameters, 38 MiB of state.
//
//   ckpt-train --dir DIR [--steps N] [--ckpt-every K] [--keep N] [--hidden H] [--batch B]
#include <ckpt/job.hpp>

#include <xxhash.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/describe/class.hpp>
#include <boost/json/serialize.hpp>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using ckpt::result;

/// Everything that defines the run; saved in every checkpoint's job.json.
struct train_config {
  std::int64_t in = 512;
  std::int64_t hidden = 4096;
  std::int64_t out = 256;
  std::int64_t batch = 4;
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  std::uint64_t seed = 42;
  std::int64_t steps = 300;
  std::int64_t ckpt_every = 10;
  std::int64_t keep = 3;  ///< retention: keep the last N checkpoints (0: keep all)
};
BOOST_DESCRIBE_STRUCT(train_config, (),
                      (in, hidden, out, batch, lr, beta1, beta2, eps, seed, steps, ckpt_every,
                       keep))

namespace {

using clock_type = std::chrono::steady_clock;
double ms_since(clock_type::time_point t) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}

std::uint64_t splitmix64(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// xoshiro256**: the data iterator. Its four words are part of the checkpoint.
struct xoshiro {
  std::uint64_t s[4];
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s[1] * 5, 7) * 9;
    const std::uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
  /// Uniform in [-1, 1).
  float uniform() { return static_cast<float>(next() >> 40) * (2.0f / 16777216.0f) - 1.0f; }
};

float uniform_from(std::uint64_t& s) {
  return static_cast<float>(splitmix64(s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/// The trainer: parameters, Adam state, step and data iterator, plus the training loop.
class train_job : public ckpt::restoreable_job<train_config> {
 public:
  train_job(ckpt::execution_spec spec, train_config config)
      : restoreable_job(std::move(spec), std::move(config)) {
    const auto& c = config_;
    const std::size_t n_w1 = c.in * c.hidden, n_w2 = c.hidden * c.out;
    for (auto* group : {&params_, &m_, &v_}) {
      group->w1.assign(n_w1, 0.0f);
      group->b1.assign(c.hidden, 0.0f);
      group->w2.assign(n_w2, 0.0f);
      group->b2.assign(c.out, 0.0f);
    }
    // Fresh parameters, teacher and data iterator, all from the seed.
    std::uint64_t s = c.seed;
    const float a1 = std::sqrt(6.0f / static_cast<float>(c.in + c.hidden));
    const float a2 = std::sqrt(6.0f / static_cast<float>(c.hidden + c.out));
    for (auto& w : params_.w1)
      w = a1 * uniform_from(s);
    for (auto& w : params_.w2)
      w = a2 * uniform_from(s);
    std::uint64_t ts = c.seed ^ 0x7465616368657221ULL;
    teacher_.resize(c.in * c.out);
    const float at = 1.0f / std::sqrt(static_cast<float>(c.in));
    for (auto& w : teacher_)
      w = at * uniform_from(ts);
    std::uint64_t ds = c.seed ^ 0x6461746173747265ULL;
    for (auto& w : data_.s)
      w = splitmix64(ds);
    // A resumed run may rewrite a checkpoint that a killed run committed but never
    // registered as LATEST: the step is deterministic, so replacing it is safe.
    save_defaults().overwrite = true;
    set_retention({.keep_last = static_cast<std::size_t>(std::max<std::int64_t>(c.keep, 0))});
  }

  std::int64_t step() const { return step_; }

  /// The checkpointed state. Leaves borrow this object's vectors: a save captures them before
  /// `staged`, a restore fills them in place.
  ckpt::tree state_tree() {
    auto leaf = [](std::vector<float>& v, ckpt::shape s) {
      return ckpt::array::borrow(std::span<float>(v), std::move(s)).value();
    };
    auto group = [&](tensors& g) {
      const auto& c = config_;
      return ckpt::tree::dict({{"w1", leaf(g.w1, {c.in, c.hidden})},
                               {"b1", leaf(g.b1, {c.hidden})},
                               {"w2", leaf(g.w2, {c.hidden, c.out})},
                               {"b2", leaf(g.b2, {c.out})}});
    };
    return ckpt::tree::dict(
        {{"params", group(params_)},
         {"opt", ckpt::tree::dict({{"m", group(m_)}, {"v", group(v_)}})},
         {"step", ckpt::array::borrow(std::span<std::int64_t>(&step_, 1), {}).value()},
         {"data_rng", ckpt::array::borrow(std::span<std::uint64_t>(data_.s, 4), {4}).value()}});
  }

  asio::awaitable<result<void>> restore_from_path(fs::path rel_path) override {
    auto t = state_tree();
    auto op = get_tree_and_metadata_from_path(rel_path, t);  // no temporaries in co_await
    auto loaded = co_await std::move(op);
    if (!loaded) co_return ckpt::fail(std::move(loaded).error());
    co_return ckpt::success();
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
        auto h = start_save_tree_and_metadata(
            suffix, state_tree(),
            json::object{{"step", step_}, {"loss", static_cast<double>(loss)}});
        if (!h) co_return ckpt::fail(std::move(h).error());
        auto staged = co_await h.value().staged();  // from here we may change the state
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

  /// XXH3-64 of the parameters' bytes in a fixed order (w1, b1, w2, b2).
  std::uint64_t params_hash() const {
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    for (const auto* v : {&params_.w1, &params_.b1, &params_.w2, &params_.b2})
      XXH3_64bits_update(st, v->data(), v->size() * sizeof(float));
    const std::uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
  }

 private:
  struct tensors {
    std::vector<float> w1, b1, w2, b2;
  };

  /// One step of Adam on a fresh batch; returns the batch's loss.
  float train_step() {
    const auto& c = config_;
    const std::size_t B = c.batch, I = c.in, H = c.hidden, O = c.out;
    x_.assign(B * I, 0.0f);
    for (auto& v : x_)
      v = data_.uniform();
    // Targets: tanh(x T).
    y_.assign(B * O, 0.0f);
    for (std::size_t b = 0; b < B; ++b) {
      float* yb = &y_[b * O];
      for (std::size_t i = 0; i < I; ++i) {
        const float xi = x_[b * I + i];
        const float* t = &teacher_[i * O];
        for (std::size_t o = 0; o < O; ++o)
          yb[o] += xi * t[o];
      }
      for (std::size_t o = 0; o < O; ++o)
        yb[o] = std::tanh(yb[o]);
    }
    // Forward.
    h_.assign(B * H, 0.0f);
    p_.assign(B * O, 0.0f);
    for (std::size_t b = 0; b < B; ++b) {
      float* hb = &h_[b * H];
      for (std::size_t j = 0; j < H; ++j)
        hb[j] = params_.b1[j];
      for (std::size_t i = 0; i < I; ++i) {
        const float xi = x_[b * I + i];
        const float* w = &params_.w1[i * H];
        for (std::size_t j = 0; j < H; ++j)
          hb[j] += xi * w[j];
      }
      for (std::size_t j = 0; j < H; ++j)
        hb[j] = hb[j] > 0.0f ? hb[j] : 0.0f;
      float* pb = &p_[b * O];
      for (std::size_t o = 0; o < O; ++o)
        pb[o] = params_.b2[o];
      for (std::size_t j = 0; j < H; ++j) {
        const float hj = hb[j];
        if (hj == 0.0f) continue;
        const float* w = &params_.w2[j * O];
        for (std::size_t o = 0; o < O; ++o)
          pb[o] += hj * w[o];
      }
    }
    // Loss and backward.
    float loss = 0.0f;
    dp_.assign(B * O, 0.0f);
    const float scale = 2.0f / static_cast<float>(B * O);
    for (std::size_t k = 0; k < B * O; ++k) {
      const float d = p_[k] - y_[k];
      loss += d * d;
      dp_[k] = scale * d;
    }
    loss /= static_cast<float>(B * O);
    grads_.w1.assign(I * H, 0.0f);
    grads_.b1.assign(H, 0.0f);
    grads_.w2.assign(H * O, 0.0f);
    grads_.b2.assign(O, 0.0f);
    dh_.assign(B * H, 0.0f);
    for (std::size_t b = 0; b < B; ++b) {
      const float* db = &dp_[b * O];
      const float* hb = &h_[b * H];
      for (std::size_t o = 0; o < O; ++o)
        grads_.b2[o] += db[o];
      float* dhb = &dh_[b * H];
      for (std::size_t j = 0; j < H; ++j) {
        if (hb[j] == 0.0f) continue;  // ReLU: no gradient, and w2's row gets nothing from b
        const float* w = &params_.w2[j * O];
        float* gw = &grads_.w2[j * O];
        float acc = 0.0f;
        for (std::size_t o = 0; o < O; ++o) {
          gw[o] += hb[j] * db[o];
          acc += db[o] * w[o];
        }
        dhb[j] = acc;
      }
      for (std::size_t j = 0; j < H; ++j)
        grads_.b1[j] += dhb[j];
      for (std::size_t i = 0; i < I; ++i) {
        const float xi = x_[b * I + i];
        float* gw = &grads_.w1[i * H];
        for (std::size_t j = 0; j < H; ++j)
          gw[j] += xi * dhb[j];
      }
    }
    // Adam.
    ++step_;
    const float b1 = static_cast<float>(c.beta1), b2 = static_cast<float>(c.beta2);
    const double t = static_cast<double>(step_);
    const float lr_t = static_cast<float>(c.lr * std::sqrt(1.0 - std::pow(c.beta2, t)) /
                                          (1.0 - std::pow(c.beta1, t)));
    const float eps = static_cast<float>(c.eps);
    auto adam = [&](std::vector<float>& p, std::vector<float>& m, std::vector<float>& v,
                    const std::vector<float>& g) {
      for (std::size_t k = 0; k < p.size(); ++k) {
        m[k] = b1 * m[k] + (1.0f - b1) * g[k];
        v[k] = b2 * v[k] + (1.0f - b2) * g[k] * g[k];
        p[k] -= lr_t * m[k] / (std::sqrt(v[k]) + eps);
      }
    };
    adam(params_.w1, m_.w1, v_.w1, grads_.w1);
    adam(params_.b1, m_.b1, v_.b1, grads_.b1);
    adam(params_.w2, m_.w2, v_.w2, grads_.w2);
    adam(params_.b2, m_.b2, v_.b2, grads_.b2);
    return loss;
  }

  tensors params_, m_, v_, grads_;
  std::int64_t step_ = 0;
  xoshiro data_{};
  std::vector<float> teacher_;
  std::vector<float> x_, y_, h_, p_, dp_, dh_;  // scratch
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "ckpt-train: %s\nusage: ckpt-train --dir DIR [--steps N] [--ckpt-every K] "
               "[--keep N] [--hidden H] [--batch B] [--lr LR] [--seed S] [--job NAME]\n",
               msg);
  std::exit(2);
}

int fail_with(const char* what, const ckpt::error& e) {
  std::fprintf(stderr, "ckpt-train: %s: %s\n", what, e.what().c_str());
  return 1;
}

/// Resumes from LATEST or starts fresh, trains, and lists the checkpoints kept: a coroutine on
/// the io_context of main's thread, awaiting every lifecycle call. (Parameters by value: the
/// frame owns them.)
asio::awaitable<int> train_main(ckpt::execution_spec spec, train_config config,
                                json::object overlay) {
  // Resume from LATEST when there is one. The model part of the config (sizes, seed, lr)
  // comes from the checkpoint; steps, ckpt_every and keep given on this command line are
  // overlaid. resume = true: the saved run_id comes back, so logging could rejoin the run.
  auto read_latest = train_job::latest(spec);
  auto latest = co_await std::move(read_latest);
  if (!latest) co_return fail_with("read LATEST", latest.error());
  std::unique_ptr<train_job> job;
  if (latest.value()) {
    const auto t0 = clock_type::now();
    auto restore = ckpt::job_from_checkpoint<train_job>(
        *latest.value(), spec, json::value(std::move(overlay)), /*resume=*/true);
    auto restored = co_await std::move(restore);
    if (!restored) co_return fail_with("resume", restored.error());
    job = std::move(restored.value().first);
    std::printf("resumed from %s at step %lld in %.1f ms (run_id %s)\n", latest.value()->c_str(),
                static_cast<long long>(job->step()), ms_since(t0), job->spec().run_id.c_str());
  } else {
    job = std::make_unique<train_job>(spec, config);
    std::printf("fresh run %s: %s\n", spec.run_id.c_str(),
                json::serialize(json::value_from(config)).c_str());
  }
  if (job->done()) std::printf("job already marked done\n");
  // Leftovers of a killed process (temporary save and trash directories) go first.
  auto cleaned = job->cleanup_stale();
  if (!cleaned) co_return fail_with("clean up", cleaned.error());
  for (const auto& name : cleaned.value().removed)
    std::printf("removed stale %s\n", name.c_str());
  std::fflush(stdout);

  auto trained = co_await job->run();
  if (!trained) co_return fail_with("train", trained.error());
  auto list = train_job::checkpoints(job->spec());
  auto kept = co_await std::move(list);
  if (!kept) co_return fail_with("list checkpoints", kept.error());
  std::printf("checkpoints kept:");
  for (const auto& name : kept.value())
    std::printf(" %s", name.c_str());
  std::printf("\nparams-xxh3 %016llx\n", static_cast<unsigned long long>(job->params_hash()));
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path dir;
  std::string job_name = "mlp";
  train_config config;
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
  spec.group = "train";
  spec.job_name = job_name;
  spec.run_id = "run-" + std::to_string(::getpid()) + "-" +
                std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  spec.cluster.checkpoints_dir = dir;

  // The whole job runs as a coroutine on an io_context in this thread.
  asio::io_context ctx;
  int rc = 1;
  asio::co_spawn(ctx, train_main(std::move(spec), std::move(config), std::move(overlay)),
                 [&rc](std::exception_ptr e, int r) {
                   if (e) std::rethrow_exception(e);
                   rc = r;
                 });
  ctx.run();
  ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  return rc;
}
