// Small pieces every ckpt-perf figure shares: median and spread of repeated runs, and the
// machine facts that go into every JSON.
#pragma once

#include <ckpt/error.hpp>

#include <boost/json/object.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace ckpt::perf {

inline constexpr double gib = 1024.0 * 1024.0 * 1024.0;

/// Median (upper median for even counts) and range of repeated measurements.
struct spread {
  double median = 0, min = 0, max = 0;
  int n = 0;
};
spread summarize(std::vector<double> v);
double mean_of(const std::vector<double>& v);
/// {"median":..,"min":..,"max":..,"n":..}
boost::json::object to_json(const spread& s);
/// "1.23 (1.10-1.31)" with printf format `fmt` for each number.
std::string describe(const spread& s, const char* fmt = "%.2f");

/// Cores, kernel release (uname -r), CPU model and the file system type of `dir` (statfs).
boost::json::object machine_facts(const std::string& dir);
/// One line: "2 cores, Intel(R) ..., kernel 6.1.0-..., ext4".
std::string machine_line(const std::string& dir);

/// The 1-minute load average, for the report's notes.
double load_average();

/// Runs `cmd` through the shell and returns its standard output; `status` gets pclose's status
/// (-1 when it could not start).
std::string run_capture(const std::string& cmd, int* status = nullptr);
/// `s` in single quotes for the shell.
std::string shell_quote(const std::string& s);
/// This executable's path (/proc/self/exe), for launching its own worker subcommands.
std::string self_exe();
/// The mpirun that ckpt-perf's MPI benches launch by default (CMake's MPIEXEC when known).
std::string default_mpirun();
/// Runs `ckpt-perf <worker_args>` (already shell-quoted) as `ranks` MPI processes (`mpirun
/// --oversubscribe --allow-run-as-root -np ranks`) and returns the JSON object on the last
/// output line that starts with `marker` (what rank 0 prints); the whole output in the error.
result<boost::json::object> run_mpi_worker(const std::string& mpirun, int ranks,
                                           const std::string& worker_args, std::string_view marker);

}  // namespace ckpt::perf
