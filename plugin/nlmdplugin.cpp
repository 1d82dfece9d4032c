/* Registration of every pair style nlmd provides, from one shared object (nlmdplugin.so).
   LAMMPS auto-loads files ending in "plugin.so" from LAMMPS_PLUGIN_PATH. */
#include "lammpsplugin_abi.h"

#include "pair_e3gnn_nlmd.h"
#include "pair_e3gnn_parallel.h"
#include "pair_e3gnn_sevenn.h"

using namespace LAMMPS_NS;

static Pair *e3gnn_creator(LAMMPS *lmp)
{
  return new PairE3GNNnlmd(lmp);
}

static Pair *e3gnn_sevenn_creator(LAMMPS *lmp)
{
  return new PairE3GNNSevenn(lmp);
}

static Pair *e3gnn_parallel_creator(LAMMPS *lmp)
{
  return new PairE3GNNParallel(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;

  plugin.version = NLMD_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "e3gnn";
  plugin.info = "e3gnn: SevenNet serial deployment on one MPI rank (nlmd plugin)";
  plugin.author = "nlmd developers; SevenNet pair style by Yutack Park (SNU)";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &e3gnn_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);

  plugin.name = "e3gnn/sevenn";
  plugin.info = "e3gnn/sevenn: SevenNet " NLMD_SEVENN_VERSION " serial pair style compiled from the installed sevenn "
                "(nlmd plugin)";
  plugin.author = "SevenNet pair style by Yutack Park (SNU); checks by nlmd developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &e3gnn_sevenn_creator;
  (*register_plugin)(&plugin, lmp);

  plugin.name = "e3gnn/parallel";
  plugin.info = "e3gnn/parallel: SevenNet parallel deployment on many MPI ranks, layer-wise ghost exchange "
                "(nlmd plugin)";
  plugin.author = "nlmd developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &e3gnn_parallel_creator;
  (*register_plugin)(&plugin, lmp);
}
