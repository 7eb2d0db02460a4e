"""The built-in destination plugins, each loaded through the ``armor_notify`` entry-point group."""
