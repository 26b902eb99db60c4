// requests.hpp -- owned MPI requests and the engine's MPI error policy.
//
// Exports:
//   RequestSet          non-blocking requests owned by one object: wait_all() completes them; the
//                       destructor cancels and completes whatever is still pending (an exception
//                       between post and wait must not leave MPI writing into freed buffers)
//   check_mpi(rc, what) throws std::runtime_error naming the call and MPI's error string
//
// Error policy: every communicator the engine makes (Geometry's Cartesian one) has
// MPI_ERRORS_ARE_FATAL, so a failing call there aborts the job instead of returning a code that
// nobody reads (mpi4py sets MPI_ERRORS_RETURN on the communicators it hands us, and
// MPI_Cart_create would inherit it). Calls on a caller's communicator (before the Cartesian one
// exists) go through check_mpi. What the Python driver does on failures is its own policy.
#pragma once
#include <mpi.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace qftml {

inline void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw std::runtime_error(std::string(what) + " failed: " + std::string(msg, len));
}

class RequestSet {
 public:
  RequestSet() = default;
  RequestSet(const RequestSet&) = delete;
  RequestSet& operator=(const RequestSet&) = delete;
  ~RequestSet() { cancel_all(); }

  void reserve(size_t n) { requests_.reserve(n); }
  MPI_Request* add() {
    requests_.push_back(MPI_REQUEST_NULL);
    return &requests_.back();
  }
  bool empty() const { return requests_.empty(); }
  size_t size() const { return requests_.size(); }
  void wait_all() {
    MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
    requests_.clear();
  }
  // A wait after MPI_Cancel returns whatever the peers do (MPI 4.1, 3.8.4), so this never hangs.
  void cancel_all() {
    if (requests_.empty()) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
      for (MPI_Request& r : requests_)
        if (r != MPI_REQUEST_NULL) MPI_Cancel(&r);
      MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
    }
    requests_.clear();
  }

 private:
  std::vector<MPI_Request> requests_;
};

}  // namespace qftml
