/* The model side of nlmd's SevenNet pair styles, with no LAMMPS in it: the graph a pair style hands over,
   what comes back, the one exception type, and the two ways of calling a deployment (serial_model.h: one
   TorchScript file or AOTInductor package; layered_model.h: SevenNet's layer-wise parallel deployment).
   The pair styles (pair_e3gnn_base.h and below) build the graph from the LAMMPS neighbour list and tally
   what comes back; these classes load the files and run torch. Like DeePMD-kit's DeepPot behind its
   PairDeepBaseModel, nothing here knows LAMMPS, and nothing in the pair styles includes torch. */
#ifndef NLMD_E3GNN_MODEL_H
#define NLMD_E3GNN_MODEL_H

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace nlmd {

// A graph of atoms for SevenNet: the first `nlocal` nodes are the centres (the atoms whose energy and forces
// this process computes), any further nodes are ghost atoms that only appear as neighbours.
struct Graph {
  int64_t nlocal = 0;
  std::vector<int64_t> species;    // model species index of every node
  std::vector<int64_t> src, dst;   // edge e: from centre node src[e] to neighbour node dst[e]
  std::vector<float> vec;          // 3 per edge: x_neighbour - x_centre

  int64_t num_nodes() const { return (int64_t) species.size(); }
  int64_t num_edges() const { return (int64_t) src.size(); }
  void clear(int64_t centres)
  {
    nlocal = centres;
    species.clear();
    src.clear();
    dst.clear();
    vec.clear();
  }
};

// What a model gives for a graph; the pair style turns it into energy, forces and virial.
struct Evaluation {
  double energy = 0.0;
  std::vector<float> atomic_energy;    // one per centre node, when asked for
  std::vector<float> dedr;             // 3 per edge: d energy / d edge vector
};

// Where a model runs: the CPU, or CUDA device `cuda`.
struct Device {
  int cuda = -1;
  bool is_cuda() const { return cuda >= 0; }
};

// Every failure of a model, torch's included, comes out as this: the file that failed and torch's message
// without its C++ backtrace. `sentence` is true when the message is already a full sentence for the user
// (a file that does not fit, not a torch failure to be prefixed with what was being done).
class ModelError : public std::runtime_error {
 public:
  ModelError(std::string file, const std::string &message, bool sentence = false) :
      std::runtime_error(message), file_(std::move(file)), sentence_(sentence)
  {
  }
  const std::string &file() const { return file_; }
  bool sentence() const { return sentence_; }

 private:
  std::string file_;
  bool sentence_;
};

// Inside a catch block: throws the exception being handled as a ModelError of `file` (a ModelError as it is;
// torch's c10::Error without its backtrace). The one place where torch's errors are caught.
[[noreturn]] void rethrow_as_model_error(const std::string &file);

// number of CUDA devices torch sees (0 without CUDA)
int cuda_device_count();

// torch's intra-op threads for this process
void set_torch_threads(int n);

}    // namespace nlmd

#endif
