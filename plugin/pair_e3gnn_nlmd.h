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

   What it does differently from SevenNet's pair_e3gnn.cpp (compiled into the same plugin as `e3gnn/sevenn`,
   see pair_e3gnn_sevenn.h; docs/performance.md compares them): torch's intra-op threads are set by the style
   (`threads N`, else NLMD_TORCH_THREADS, else OMP_NUM_THREADS, else every core of the process, or one when
   the machine is already busy) instead of inheriting LAMMPS's one OpenMP thread; graph buffers are heap
   vectors reused from step to step (no edge-sized arrays on the stack); ghosts map to their local atom through
   a tag-indexed vector; forces and virial are summed in double precision; the TorchScript executor is warmed
   up when the model is loaded; errors keep torch's message.

   The graph and the tally are PairE3GNNBase's (FOLD_GHOSTS), the model call nlmd::SerialModel's
   (serial_model.h); this class adds the syntax, the checks of the model file and the torch threads. */
#ifndef NLMD_PAIR_E3GNN_NLMD_H
#define NLMD_PAIR_E3GNN_NLMD_H

#include "pair_e3gnn_base.h"
#include "serial_model.h"

#include <string>

namespace LAMMPS_NS {

class PairE3GNNnlmd : public PairE3GNNBase {
 public:
  PairE3GNNnlmd(class LAMMPS *);

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;

 private:
  nlmd::SerialModel model;

  int threads_keyword = 0;      // `pair_style e3gnn threads N`, 0: not given
  int nthreads = 1;             // torch intra-op threads used in compute()
  std::string threads_origin;

  void require_single_rank();
  void choose_threads();
  void load(const std::string &path, const nlmd::ModelMetadata &meta, std::string &kind);
};

}    // namespace LAMMPS_NS

#endif
