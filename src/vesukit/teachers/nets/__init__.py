"""Networks written in vesukit (those not available from smp): TransUNet and a 3D ResEnc U-Net."""
