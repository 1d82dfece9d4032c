/* pair_style e3gnn/sevenn: SevenNet's own serial pair style, compiled unmodified from the installed sevenn
   package (sevenn/pair_e3gnn/pair_e3gnn.cpp), with the checks it lacks: one MPI rank only (pointing to
   e3gnn/parallel), the model file and the pair_coeff element list validated with clear messages before
   SevenNet loads the model, and what was loaded written to the LAMMPS log.
   nlmd's default serial style is `e3gnn` (pair_e3gnn_nlmd.cpp: same model, same syntax, heap buffers,
   torch thread control, warm-up at load). This one is kept as SevenNet's reference implementation:
   the tests check both against SevenNetCalculator. */
#ifndef NLMD_PAIR_E3GNN_SEVENN_H
#define NLMD_PAIR_E3GNN_SEVENN_H

#include "pair_e3gnn.h"

namespace LAMMPS_NS {

class PairE3GNNSevenn : public PairE3GNN {
 public:
  PairE3GNNSevenn(class LAMMPS *);
  void coeff(int, char **) override;
  void init_style() override;

 private:
  void require_single_rank();
};

}    // namespace LAMMPS_NS

#endif
