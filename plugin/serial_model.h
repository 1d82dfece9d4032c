/* A SevenNet serial deployment as a function of a graph: deployed_serial.pt (TorchScript) or the
   AOTInductor package `nlmd deploy --aot` writes (deployed_serial.pt2; python/nlmd/aot.py has its calling
   convention). With a package, graphs with fewer than two atoms or edges, which it is not compiled for, go
   through the TorchScript file named in its metadata. No LAMMPS here: pair_e3gnn_nlmd.cpp drives it. */
#ifndef NLMD_SERIAL_MODEL_H
#define NLMD_SERIAL_MODEL_H

#include "e3gnn_model.h"

#include <memory>
#include <string>
#include <vector>

namespace nlmd {

class SerialModel {
 public:
  SerialModel();
  ~SerialModel();

  // TorchScript file `path` on `device` (`oeq`: register the autograd of OpenEquivariance kernels)
  void load_torchscript(const std::string &path, Device device, bool oeq);
  // AOTInductor package `path`, compiled for `device`; `fallback`: the TorchScript file for graphs too
  // small for it ("" when there is none)
  void load_package(const std::string &path, Device device, const std::string &fallback);

  bool loaded() const;
  Device device() const { return device_; }
  const std::string &path() const { return path_; }

  // energy, d energy / d edge vector and, when `want_atomic`, the per-atom energies of the centres
  void evaluate(const Graph &graph, bool want_atomic, Evaluation &out);

  /* The first calls of a TorchScript module build its execution plan and the autograd graph functions,
     and the first kernels allocate their workspaces: on SevenNet-0 the first MD steps were many times
     slower than the following ones. This does that work at load time, on a small graph of `species`
     (the model species of the atom types) with edges shorter than `cutoff`. */
  void warm_up(const std::vector<int64_t> &species, double cutoff);

 private:
  struct Torch;
  std::unique_ptr<Torch> torch_;
  std::string path_;        // the file pair_coeff names
  std::string fallback_;    // TorchScript file for graphs the package does not take (empty: none)
  Device device_;
};

}    // namespace nlmd

#endif
