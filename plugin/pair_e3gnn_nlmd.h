/* pair_style e3gnn: a SevenNet serial deployment (deployed_serial.pt) on one MPI rank — nlmd's own
   implementation, with SevenNet's syntax:

       pair_style e3gnn [threads N]
       pair_coeff * * <deployed_serial.pt> <element of type 1> <element of type 2> ...
       pair_coeff * * <deployed_serial.pt2> <elements ...>      (AOTInductor package of `nlmd deploy --aot`)

   With a .pt2 file the model and its energy gradient run as C++ compiled ahead of time by Inductor
   (python/nlmd/aot.py has the calling convention); graphs with fewer than two atoms or edges, which the
   package is not compiled for, go through the TorchScript file named in its metadata.

   The graph has the local atoms as nodes; a neighbour within the cutoff that is a ghost atom (a periodic
   image) becomes an edge to the local atom it images, with the image's displacement as edge vector, so
   small cells and non-consecutive atom ids work. Forces and the virial come from d(energy)/d(edge vector).

   What it does differently from SevenNet's pair_e3gnn.cpp (which nlmd compiled before, see
   docs/performance.md): torch's intra-op threads are set by the style (`threads N`, else NLMD_TORCH_THREADS,
   else OMP_NUM_THREADS, else every core of the process, or one when the machine is already busy) instead of
   inheriting LAMMPS's one OpenMP thread;
   graph buffers are heap vectors reused from step to step (no edge-sized arrays on the stack); ghosts map to
   their local atom through a tag-indexed vector; forces and virial are summed in double precision; the
   TorchScript executor is warmed up when the model is loaded; errors keep torch's message. */
#ifndef NLMD_PAIR_E3GNN_NLMD_H
#define NLMD_PAIR_E3GNN_NLMD_H

#include "pair_e3gnn_base.h"

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace LAMMPS_NS {

class PairE3GNNnlmd : public PairE3GNNBase {
 public:
  PairE3GNNnlmd(class LAMMPS *);

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 private:
  torch::jit::Module model;                                      // TorchScript (or the package's fallback)
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> aoti;  // the AOTInductor package, when given
  std::string model_path;
  std::string fallback_path;    // TorchScript file for graphs the package does not take (empty: none)
  torch::Device device;
  double cutoff = 0.0;
  double cutoff_sq = 0.0;
  bool loaded = false;

  int threads_keyword = 0;      // `pair_style e3gnn threads N`, 0: not given
  int nthreads = 1;             // torch intra-op threads used in compute()
  std::string threads_origin;

  // graph buffers, reused from step to step
  std::vector<int> local_of_tag;      // atom tag -> local index (this rank owns every atom)
  std::vector<int64_t> node_species;
  std::vector<int64_t> edge_src, edge_dst;
  std::vector<float> edge_vec;

  void require_single_rank();
  void choose_threads();
  void apply_threads();
  void load_model(const std::string &path, bool oeq);
  void load_package(const std::string &path);
  void warm_up();
  torch::IValue run_model(const torch::Tensor &species, const torch::Tensor &edge_index,
                          const torch::Tensor &edge_vec, int64_t natoms);
  // energy (scalar), per-atom energies [natoms] (when wanted) and d energy / d edge_vec [nedges, 3] on the CPU
  void evaluate(const torch::Tensor &species, const torch::Tensor &edge_index, const torch::Tensor &edge_vec,
                int64_t natoms, bool want_atomic, torch::Tensor &energy, torch::Tensor &atomic_energy,
                torch::Tensor &dedr);
};

}    // namespace LAMMPS_NS

#endif
