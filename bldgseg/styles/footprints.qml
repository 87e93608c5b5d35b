<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.16-Białowieża" styleCategories="Symbology|Labeling|Fields|Forms|MapTips" labelsEnabled="0" hasScaleBasedVisibilityFlag="0" minScale="100000000" maxScale="0" symbologyReferenceScale="-1">
  <renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0" referencescale="-1">
    <symbols>
      <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
          <data_defined_properties>
            <Option type="Map">
              <Option name="name" type="QString" value=""/>
              <Option name="properties"/>
              <Option name="type" type="QString" value="collection"/>
            </Option>
          </data_defined_properties>
        <layer class="SimpleFill" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="border_width_map_unit_scale" type="QString" value="3x:0,0,0,0,0,0"/>
            <Option name="color" type="QString" value="255,140,0,89"/>
            <Option name="joinstyle" type="QString" value="miter"/>
            <Option name="offset" type="QString" value="0,0"/>
            <Option name="offset_map_unit_scale" type="QString" value="3x:0,0,0,0,0,0"/>
            <Option name="offset_unit" type="QString" value="MM"/>
            <Option name="outline_color" type="QString" value="204,85,0,255"/>
            <Option name="outline_style" type="QString" value="solid"/>
            <Option name="outline_width" type="QString" value="0.6"/>
            <Option name="outline_width_unit" type="QString" value="MM"/>
            <Option name="style" type="QString" value="solid"/>
          </Option>
          <prop k="border_width_map_unit_scale" v="3x:0,0,0,0,0,0"/>
          <prop k="color" v="255,140,0,89"/>
          <prop k="joinstyle" v="miter"/>
          <prop k="offset" v="0,0"/>
          <prop k="offset_map_unit_scale" v="3x:0,0,0,0,0,0"/>
          <prop k="offset_unit" v="MM"/>
          <prop k="outline_color" v="204,85,0,255"/>
          <prop k="outline_style" v="solid"/>
          <prop k="outline_width" v="0.6"/>
          <prop k="outline_width_unit" v="MM"/>
          <prop k="style" v="solid"/>
          <data_defined_properties>
            <Option type="Map">
              <Option name="name" type="QString" value=""/>
              <Option name="properties"/>
              <Option name="type" type="QString" value="collection"/>
            </Option>
          </data_defined_properties>
        </layer>
      </symbol>
    </symbols>
    <rotation/>
    <sizescale/>
  </renderer-v2>
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
  <layerOpacity>1</layerOpacity>
  <legend type="default-vector" showLabelLegend="0"/>
  <fieldConfiguration>
    <field name="area_m2" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="1"/>
            <Option name="Step" type="double" value="0.1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="perimeter_m" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="1"/>
            <Option name="Step" type="double" value="0.1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="width_m" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="1"/>
            <Option name="Step" type="double" value="0.1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="length_m" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="1"/>
            <Option name="Step" type="double" value="0.1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="orientation_deg" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="0"/>
            <Option name="Step" type="double" value="1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="compactness" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="2"/>
            <Option name="Step" type="double" value="0.01"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="rectangularity" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="2"/>
            <Option name="Step" type="double" value="0.01"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="confidence" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="2"/>
            <Option name="Step" type="double" value="0.01"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="height_m" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="1"/>
            <Option name="Step" type="double" value="0.1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="texture_contrast" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="3"/>
            <Option name="Step" type="double" value="0.001"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="texture_homogeneity" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="3"/>
            <Option name="Step" type="double" value="0.001"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="texture_energy" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="3"/>
            <Option name="Step" type="double" value="0.001"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="texture_correlation" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="3"/>
            <Option name="Step" type="double" value="0.001"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="texture_entropy" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="3"/>
            <Option name="Step" type="double" value="0.001"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="mean_r" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="0"/>
            <Option name="Step" type="double" value="1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="mean_g" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="0"/>
            <Option name="Step" type="double" value="1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="mean_b" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="0"/>
            <Option name="Step" type="double" value="1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="std_r" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="1"/>
            <Option name="Step" type="double" value="0.1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="std_g" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="1"/>
            <Option name="Step" type="double" value="0.1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="std_b" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="1"/>
            <Option name="Step" type="double" value="0.1"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="centroid_lon" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="6"/>
            <Option name="Step" type="double" value="1e-06"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
    <field name="centroid_lat" configurationFlags="None">
      <editWidget type="Range">
        <config>
          <Option type="Map">
            <Option name="AllowNull" type="bool" value="true"/>
            <Option name="Max" type="double" value="1e+12"/>
            <Option name="Min" type="double" value="-1e+12"/>
            <Option name="Precision" type="int" value="6"/>
            <Option name="Step" type="double" value="1e-06"/>
            <Option name="Style" type="QString" value="SpinBox"/>
          </Option>
        </config>
      </editWidget>
    </field>
  </fieldConfiguration>
  <aliases>
    <alias field="area_m2" index="0" name="Area (m²)"/>
    <alias field="perimeter_m" index="1" name="Perimeter (m)"/>
    <alias field="width_m" index="2" name="Width (m)"/>
    <alias field="length_m" index="3" name="Length (m)"/>
    <alias field="orientation_deg" index="4" name="Orientation (° clockwise from north)"/>
    <alias field="compactness" index="5" name="Compactness (Polsby–Popper)"/>
    <alias field="rectangularity" index="6" name="Rectangularity"/>
    <alias field="confidence" index="7" name="Confidence (mean probability)"/>
    <alias field="height_m" index="8" name="Height (m)"/>
    <alias field="texture_contrast" index="9" name="Texture contrast"/>
    <alias field="texture_homogeneity" index="10" name="Texture homogeneity"/>
    <alias field="texture_energy" index="11" name="Texture energy"/>
    <alias field="texture_correlation" index="12" name="Texture correlation"/>
    <alias field="texture_entropy" index="13" name="Texture entropy"/>
    <alias field="mean_r" index="14" name="Mean red"/>
    <alias field="mean_g" index="15" name="Mean green"/>
    <alias field="mean_b" index="16" name="Mean blue"/>
    <alias field="std_r" index="17" name="Std. dev. red"/>
    <alias field="std_g" index="18" name="Std. dev. green"/>
    <alias field="std_b" index="19" name="Std. dev. blue"/>
    <alias field="centroid_lon" index="20" name="Centroid longitude (°)"/>
    <alias field="centroid_lat" index="21" name="Centroid latitude (°)"/>
    <alias field="source_image" index="22" name="Source image"/>
    <alias field="model" index="23" name="Model"/>
    <alias field="image_date" index="24" name="Image date"/>
  </aliases>
  <previewExpression>concat(format_number("area_m2", 0), ' m²')</previewExpression>
  <mapTip>[% format_number("area_m2", 1) %] m²[% if("height_m" IS NULL, '', concat(', ', format_number("height_m", 1), ' m high')) %][% if("confidence" IS NULL, '', concat(', confidence ', format_number("confidence", 2))) %]</mapTip>
  <layerGeometryType>2</layerGeometryType>
</qgis>
