// A program outside the ckpt tree, built against an installed ckpt via find_package. It runs
// Asio itself (an io_context of its own, in whatever Asio mode it was built with) and awaits a
// ckpt save and load from its own coroutine. Usage: consumer DIR
#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/tree.hpp>
#ifdef CONSUMER_MPI
#include <ckpt/mpi_coordinator.hpp>
#endif

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdio>
#include <filesystem>
#include <vector>

namespace asio = boost::asio;

asio::awaitable<bool> save_and_load(std::filesystem::path dir) {
  std::vector<float> w(1 << 16);
  for (std::size_t i = 0; i < w.size(); ++i)
    w[i] = static_cast<float>(i) * 0.5f;
  auto leaf = ckpt::array::borrow(std::span<float>(w), {256, 256});
  if (!leaf) co_return false;
  ckpt::tree t = ckpt::tree::dict({{"w", leaf.value()}});
  auto h = ckpt::start_save(dir / "step_1", t, {{"step", 1}});
  auto staged = co_await h.staged();
  if (!staged) co_return false;
  // The program's own Asio objects work beside ckpt's.
  asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
  co_await timer.async_wait(asio::use_awaitable);
  auto committed = co_await h.committed();
  if (!committed) {
    std::printf("consumer: save failed: %s\n", committed.error().message().c_str());
    co_return false;
  }
  auto got = co_await ckpt::load(dir / "step_1");
  if (!got) {
    std::printf("consumer: load failed: %s\n", got.error().message().c_str());
    co_return false;
  }
  const bool same = got.value().tree == t && got.value().metadata.at("step").as_int64() == 1;
  std::printf("consumer: saved and loaded %s: %s\n",
              got.value().tree.flatten()[0].array.describe().c_str(), same ? "equal" : "DIFFERENT");
  co_return same;
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  asio::io_context ctx;
  bool ok = false;
  asio::co_spawn(ctx, save_and_load(argv[1]), [&](std::exception_ptr e, bool r) { ok = !e && r; });
  ctx.run();
  ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  return ok ? 0 : 1;
}
